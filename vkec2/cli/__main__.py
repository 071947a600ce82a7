"""``python -m vkec2.cli``: the same as the ``vkec2`` command."""

from vkec2.cli.main import main

raise SystemExit(main())
