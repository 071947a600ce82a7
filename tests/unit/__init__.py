"""Pure logic: configuration loading and per-pod EC2 parameters."""
