"""The directory refresher: keep the newest valid directory, switch keys, warn before expiry.

A background task of the running node (started from node.federation.app). Each pass:

1. gathers candidate directories from the node's own ``directory.json``
   (where ``puente federation install`` writes), the configured sources and
   the peers (node.federation.directory_sources);
2. applies them through node.trust.acceptance, oldest first, walking intermediate
   versions when an operator rotation needs them;
3. records each accepted one in the history, writes the newest to
   ``directory.json``, audits ``directory.updated`` and swaps it into the
   NodeContext (one attribute assignment: every later request sees it);
4. switches the node's own keys when a rotated key comes into force
   (node.federation.key_rotation);
5. rebuilds the server TLS context and drops pooled client connections when
   the node's certificate or any pin in force changed;
6. reports the directory's remaining life: log lines at ``warn_days`` and
   ``critical_days`` before expiry, and the health fields of ``/healthz``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.auditlog import entries as audit
from node.core.logs import get_logger
from node.federation import directory_history
from node.federation.directory_sources import Fetched, fetch_all
from node.federation.key_rotation import Activation, activate_due_keys
from node.storage.context import NodeContext
from node.trust.acceptance import Refusal, TrustedDirectory
from node.trust.directory import Directory
from node.trust.live_tls import LiveServerTls
from node.trust.operator import write_json

log = get_logger(__name__)

WARNING_LOG_INTERVAL = 3600.0  # while in warning, repeat the log line at most hourly
MAX_CHAIN_FETCH = 64  # intermediate versions fetched in one pass; the next pass goes on


@dataclass(frozen=True)
class DirectoryHealth:
    """How close the held directory is to expiry: ``ok``, ``warning``, ``critical``, ``expired``."""

    status: str
    version: int
    expires_at: dt.datetime
    expires_in_seconds: int

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "version": self.version,
            "expires_at": self.expires_at.isoformat(),
            "expires_in_seconds": self.expires_in_seconds,
        }


def directory_health(
    directory: Directory, now: dt.datetime, *, warn_days: float, critical_days: float
) -> DirectoryHealth:
    left = directory.expires_at - now
    if left <= dt.timedelta(0):
        status = "expired"
    elif left <= dt.timedelta(days=critical_days):
        status = "critical"
    elif left <= dt.timedelta(days=warn_days):
        status = "warning"
    else:
        status = "ok"
    return DirectoryHealth(
        status, directory.version, directory.expires_at, int(left.total_seconds())
    )


def health_fields(ctx: NodeContext) -> dict[str, Any]:
    """The trust fields of ``/healthz``: the directory's life and whether keys are protected."""
    federation = ctx.config.federation
    health = directory_health(
        ctx.directory,
        ctx.now(),
        warn_days=federation.warn_days,
        critical_days=federation.critical_days,
    )
    return {
        "directory": health.as_json(),
        "member": ctx.directory.node(ctx.node_id) is not None,
        "keys_protected": ctx.keys.protected,
    }


@dataclass
class RefreshReport:
    """What one pass did."""

    accepted: list[int] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    activation: Activation = field(default_factory=lambda: Activation({}))
    tls_reloaded: bool = False
    health: DirectoryHealth | None = None


class DirectoryRefresher:
    """Owns the node's trusted directory state while it runs."""

    def __init__(
        self,
        ctx: NodeContext,
        *,
        server_tls: LiveServerTls | None = None,
        forget_sessions: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.server_tls = server_tls
        self.forget_sessions = forget_sessions
        self.trusted = TrustedDirectory(ctx.trust_root, ctx.directory)
        self._lock = asyncio.Lock()
        self._tls_state = self._tls_fingerprint()
        self._last_status = "ok"
        self._last_warning_log = 0.0

    async def start(self) -> None:
        """Record the held directory in the history and report its health."""
        await directory_history.record(
            self.ctx.sessions, self.ctx.directory, seen_at=self.ctx.now()
        )
        await self.refresh_once(fetch=self._needs_directory())

    async def run_forever(self) -> None:
        interval = self.ctx.config.federation.refresh_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_once()
            except Exception:  # one bad pass must not end refreshing
                log.exception("directory_refresh_failed")

    async def refresh_once(
        self, *, fetch: bool = True, offered: Sequence[Mapping[str, Any]] = ()
    ) -> RefreshReport:
        """One pass (see the module doc). ``offered`` adds candidates (tests, install)."""
        async with self._lock:
            report = RefreshReport()
            candidates = [Fetched("offered", signed) for signed in offered]
            candidates.extend(self._local_file())
            if fetch:
                candidates.extend(await fetch_all(self.ctx))
            await self._apply(candidates, report, fetch=fetch)
            report.activation = await activate_due_keys(self.ctx)
            report.tls_reloaded = await self._sync_tls()
            report.health = self._report_health()
            return report

    async def accept(self, signed: Mapping[str, Any]) -> Directory | None:
        """Offer one directory now; raise its refusal if it breaks a rule."""
        async with self._lock:
            now = self.ctx.now()
            directory = self.trusted.update(signed, now=now)
            if directory is not None:
                await self._install([directory], now)
        await self.refresh_once(fetch=False)
        return directory

    # --- the steps ---------------------------------------------------------------------------

    async def _apply(
        self, candidates: list[Fetched], report: RefreshReport, *, fetch: bool
    ) -> None:
        now = self.ctx.now()
        accepted, refused = self.trusted.update_from([c.signed for c in candidates], now=now)
        gap = _chain_gap(self.trusted.current.version, refused)
        if gap and fetch:
            # A newer directory signed only by a new operator set: fetch the versions in
            # between, which both sets signed, and walk the chain.
            middle: list[Fetched] = []
            first = self.trusted.current.version + 1
            for version in range(first, min(gap, first + MAX_CHAIN_FETCH)):
                middle.extend(await fetch_all(self.ctx, version=version))
            more, refused = self.trusted.update_from(
                [c.signed for c in middle + candidates], now=now
            )
            accepted.extend(more)
        for refusal in refused:
            if refusal.reason != "directory_rollback":  # sources serving an older copy is normal
                log.warning(
                    "directory_refused",
                    version=refusal.version,
                    reason=refusal.reason,
                    detail=refusal.detail,
                )
        report.refused = refused
        if accepted:
            await self._install(accepted, now)
            report.accepted = [d.version for d in accepted]

    async def _install(self, accepted: Sequence[Directory], now: dt.datetime) -> None:
        previous = self.ctx.directory
        for directory in accepted:
            await directory_history.record(self.ctx.sessions, directory, seen_at=now)
        newest = accepted[-1]
        write_json(self.ctx.config.directory_path, dict(newest.signed))
        async with self.ctx.sessions.begin() as session:
            await audit.append(
                session,
                node=self.ctx.node_id,
                event="directory.updated",
                at=now,
                directory_version=newest.version,
                previous_version=previous.version,
                directory_sha256=newest.digest,
            )
        self.ctx.directory = newest
        added = sorted(newest.nodes.keys() - previous.nodes.keys())
        removed = sorted(previous.nodes.keys() - newest.nodes.keys())
        log.info(
            "directory_updated",
            version=newest.version,
            previous_version=previous.version,
            nodes_added=added,
            nodes_removed=removed,
        )
        if newest.node(self.ctx.node_id) is None:
            log.error(
                "node_removed_from_federation",
                node=self.ctx.node_id,
                version=newest.version,
                detail="this node can no longer send or receive",
            )

    def _local_file(self) -> list[Fetched]:
        try:
            text = self.ctx.config.directory_path.read_text(encoding="utf-8")
            value = json.loads(text)
        except (OSError, ValueError):
            return []
        return [Fetched("directory.json", value)] if isinstance(value, dict) else []

    def _tls_fingerprint(self) -> tuple[str, frozenset[tuple[str, str]]]:
        now = self.ctx.now()
        pins = frozenset(
            (member.id, pin)
            for member in self.ctx.directory.nodes.values()
            for pin in member.trusted_pins(now)
        )
        return self.ctx.keys.tls.pin, pins

    async def _sync_tls(self) -> bool:
        state = self._tls_fingerprint()
        if state == self._tls_state:
            return False
        self._tls_state = state
        if self.server_tls is not None:
            self.server_tls.reload()
        if self.forget_sessions is not None:
            await self.forget_sessions()
        log.info("tls_reloaded", own_pin=state[0], pins_in_force=len(state[1]))
        return True

    def _needs_directory(self) -> bool:
        health = self._health()
        return health.status != "ok"

    def _health(self) -> DirectoryHealth:
        federation = self.ctx.config.federation
        return directory_health(
            self.ctx.directory,
            self.ctx.now(),
            warn_days=federation.warn_days,
            critical_days=federation.critical_days,
        )

    def _report_health(self) -> DirectoryHealth:
        health = self._health()
        changed = health.status != self._last_status
        due = time.monotonic() - self._last_warning_log >= WARNING_LOG_INTERVAL
        if health.status != "ok" and (changed or due):
            self._last_warning_log = time.monotonic()
            fields = {
                "version": health.version,
                "expires_at": health.expires_at.isoformat(),
                "expires_in_seconds": health.expires_in_seconds,
            }
            if health.status == "warning":
                log.warning("directory_expiry_warning", **fields)
            elif health.status == "critical":
                log.error("directory_expiry_critical", **fields)
            else:
                log.error("directory_expired", **fields, detail="traffic is refused")
        elif changed:
            log.info("directory_expiry_ok", version=health.version)
        self._last_status = health.status
        return health


def _chain_gap(current: int, refused: Sequence[Refusal]) -> int | None:
    """The version of a newer directory refused for lack of signatures, if any (the chain's end)."""
    versions = [
        r.version
        for r in refused
        if r.reason == "directory_under_threshold" and r.version and r.version > current + 1
    ]
    return max(versions) if versions else None
