"""Helpers shared by the subcommands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from node.storage.context import NodeContext, open_node
from node.trust.at_rest import Unlocker, passphrase_source

T = TypeVar("T")


def with_node(
    data_dir: Path, work: Callable[[NodeContext], Awaitable[T]], *, unlocker: Unlocker | None = None
) -> T:
    """Open the node in ``data_dir``, run ``work`` on it, close it.

    Encrypted keys open with ``unlocker``, by default from ``PUENTE_KEY_PASSPHRASE``
    or a prompt on a terminal.
    """

    async def run() -> T:
        ctx = open_node(data_dir, unlocker=unlocker or Unlocker(passphrase_source(None)))
        try:
            return await work(ctx)
        finally:
            await ctx.close()

    return asyncio.run(run())
