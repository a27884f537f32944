"""``python -m node`` is the ``puente`` command."""

from node.cli import main

raise SystemExit(main())
