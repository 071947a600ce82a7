"""The producer: unit logic and end to end against the Kubernetes API double."""
