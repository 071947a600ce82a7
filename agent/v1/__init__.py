"""Python code generated from ``proto/agent/v1/*.proto`` (see proto/README.md); do not edit."""
