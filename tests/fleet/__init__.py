"""Fleet core end to end: the store, the EC2 gateway, the lifecycle tasks with real workers."""
