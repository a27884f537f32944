"""``python -m node.commands`` is the ``puente`` command (how tests and the demo start nodes)."""

from node.commands.cli import main

raise SystemExit(main())
