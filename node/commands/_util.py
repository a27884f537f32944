"""Helpers shared by the subcommands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from node.context import NodeContext, open_node

T = TypeVar("T")


def with_node(data_dir: Path, work: Callable[[NodeContext], Awaitable[T]]) -> T:
    """Open the node in ``data_dir``, run ``work`` on it, close it."""

    async def run() -> T:
        ctx = open_node(data_dir)
        try:
            return await work(ctx)
        finally:
            await ctx.close()

    return asyncio.run(run())
