"""vkec2's shared core: configuration, models, the Redis store, the EC2 gateway, the agent client and the CLI.

Everything the producer and the workers have in common lives here; it never imports the
Kubernetes client (only :mod:`producer` talks to Kubernetes) nor the tasks (only :mod:`tasks`
registers them). See docs/architecture.md for the module map.
"""
