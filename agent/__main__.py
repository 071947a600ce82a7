"""``python -m agent``: run the agent server (the same as ``vkec2 agent``)."""

import sys

from agent.cli import main

sys.exit(main(sys.argv[1:]))
