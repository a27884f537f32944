"""``puente demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run a local three-country federation")
    demo.add_argument("--dir", type=Path, help="where to put it (default: a fresh temp dir)")
    demo.add_argument("--once", action="store_true", help="exit after the story")
    demo.set_defaults(handler=demo_cmd)


def demo_cmd(args: argparse.Namespace) -> int:
    from node.demo.run import run_demo

    return run_demo(args.dir, once=args.once, out=sys.stdout)
