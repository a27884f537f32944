"""The background jobs a serving node runs, as aiohttp cleanup contexts.

Each job is a service's ``run_forever`` loop; this module only starts it when
the app starts and cancels it when the app stops, so the services stay free of
aiohttp application state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web

from node.auditlog import witness_rounds
from node.federation.app_keys import CONTEXT
from node.intake import retention
from node.storage.context import NodeContext

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _job(
    name: str, run_forever: Callable[[NodeContext], Coroutine[Any, Any, None]]
) -> CleanupContext:
    async def job(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_forever(app[CONTEXT]), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return job


# Retention purge and consent lapse (node.intake.retention).
lifecycle = _job("lifecycle", retention.run_forever)


async def witnessing(app: web.Application) -> AsyncIterator[None]:
    """Scheduled checkpoints and witnessing (node.auditlog.witness_rounds), if the log is set up."""
    if app[CONTEXT].audit is None:
        yield
        return
    async for _ in _job("audit-witnessing", witness_rounds.run_forever)(app):
        yield
