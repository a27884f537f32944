"""Where a node fetches signed directories from: URLs, files and its peers.

A signed directory authenticates itself (node.trust.acceptance checks every signature),
so a source only has to be available, not trusted: a web server, a shared
file, or any member over mutual TLS at ``GET /federation/v1/directory``. Each
source can also serve a given version (for a chain across an operator
rotation): ``<dir>/<version>.directory.json`` next to a URL or file, and
``?version=<n>`` from a peer (docs/directory.md, "Distribution").
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from node.core.logs import get_logger
from node.storage.context import NodeContext
from node.trust.directory import MemberNode
from node.trust.tls import client_context

log = get_logger(__name__)

DIRECTORY_PATH: Final = "/federation/v1/directory"
MAX_DIRECTORY_BYTES: Final = 4 * 1024 * 1024
FETCH_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Fetched:
    """A candidate directory and where it came from (for logs)."""

    source: str
    signed: Mapping[str, Any]


class SourceError(Exception):
    """A source could not be read; the refresher logs it and tries the others."""


def versioned_url(url: str, version: int) -> str:
    """``https://x/dir/directory.json`` -> ``https://x/dir/<version>.directory.json``."""
    parts = urlsplit(url)
    head, _, _ = parts.path.rpartition("/")
    return urlunsplit(parts._replace(path=f"{head}/{version}.directory.json"))


async def fetch_all(ctx: NodeContext, *, version: int | None = None) -> list[Fetched]:
    """The newest directory (or ``version``) from every configured source and peer."""
    config = ctx.config.federation
    jobs: list[tuple[str, asyncio.Task[Mapping[str, Any]]]] = []
    for url in config.sources:
        target = versioned_url(url, version) if version is not None else url
        jobs.append((target, asyncio.ensure_future(fetch_url(target))))
    if config.fetch_from_peers:
        now = ctx.now()
        for member in ctx.directory.nodes.values():
            if member.id == ctx.node_id:
                continue
            ssl_context = client_context(ctx.keys.tls, member, now)
            label = f"peer {member.id}"
            jobs.append((label, asyncio.ensure_future(fetch_peer(member, ssl_context, version))))
    found: list[Fetched] = []
    for label, job in jobs:
        try:
            found.append(Fetched(label, await job))
        except SourceError as exc:
            log.info("directory_source_unavailable", source=label, error=str(exc))
    return found


async def fetch_url(url: str) -> Mapping[str, Any]:
    """A signed directory from an ``https://`` or ``file://`` URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return await asyncio.to_thread(_read_file, Path(unquote(parts.path)))
    if parts.scheme != "https":
        raise SourceError(f"unsupported source {url}")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return await _get_json(session, url)


async def fetch_peer(
    member: MemberNode, ssl_context: ssl.SSLContext, version: int | None = None
) -> Mapping[str, Any]:
    """A peer's held directory (or a version from its history), over mutual TLS."""
    url = member.endpoint + DIRECTORY_PATH + (f"?version={version}" if version else "")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    connector = aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return await _get_json(session, url)


async def _get_json(session: aiohttp.ClientSession, url: str) -> Mapping[str, Any]:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise SourceError(f"HTTP {response.status}")
            body = await response.content.read(MAX_DIRECTORY_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SourceError(type(exc).__name__) from exc
    return _parse(body)


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        with path.open("rb") as handle:
            body = handle.read(MAX_DIRECTORY_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror}") from exc
    return _parse(body)


def _parse(body: bytes) -> Mapping[str, Any]:
    if len(body) > MAX_DIRECTORY_BYTES:
        raise SourceError("larger than a directory may be")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SourceError("not JSON") from exc
    if not isinstance(value, dict):
        raise SourceError("not a JSON object")
    return value
