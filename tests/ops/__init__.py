"""Operating the fleet: the vkec2 CLI and vkec2 up."""
