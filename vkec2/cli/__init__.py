"""The ``vkec2`` command line: the click group, its subcommands and the local fleet's process tools.

This is the top layer of the package: it may import everything below it (the broker, the fleet
logic, the store, the EC2 gateway) and nothing imports it except ``python -m vkec2.cli`` and the
``vkec2`` console script. ``main`` holds the group, ``common`` the click classes and exit statuses
shared by the subcommands, ``fleet`` the operator commands, ``config`` ``vkec2 config check``,
``localfleet`` ``vkec2 up``, and ``procs`` the supervised local processes ``vkec2 up`` and the
tests start.
"""
