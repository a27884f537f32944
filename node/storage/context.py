"""Everything a running node holds: config, keys, directory, database, clock.

Built once by :func:`open_node` and passed explicitly to the server, the
outbox and the CLI (no global service locator).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey
from sqlalchemy.ext.asyncio import AsyncEngine

from node.core.clock import Clock, utcnow
from node.core.config import NodeConfig, load_config
from node.core.errors import ConfigError, DirectoryError
from node.core.testhooks import CrashPoints
from node.storage import (  # noqa: F401  (register their tables)
    audit_models,
    consent_models,
    delivery_models,
    directory_models,
)
from node.storage.engine import create_engine, session_factory
from node.storage.sessions import Sessions
from node.trust.acceptance import verify_held
from node.trust.at_rest import Unlocker, is_wrapped, passphrase_source
from node.trust.directory import Directory, TrustRoot
from node.trust.keys import (
    ENCRYPTION_CURVE,
    SIGNING_CURVE,
    TlsIdentity,
    load_jwk,
    load_tls_identity,
)
from node.trust.log_keys import AUDIT_FILE, AuditIdentity, load_audit_identity

# The standard library's logger: a CLI command that did not configure logging still
# shows these on stderr (never in its stdout output); `puente serve` renders them as JSON.
log = logging.getLogger(__name__)


@dataclass
class NodeKeys:
    """This node's private keys: the active ones and those kept to open old mail."""

    signing: OKPKey
    encryption: dict[str, OKPKey]
    active_encryption_kid: str
    tls: TlsIdentity
    # Asks for the passphrase when an encrypted key is met, now or at a later rotation.
    unlocker: Unlocker = field(default_factory=Unlocker)
    protected: bool = False  # every private key file of this node is encrypted at rest


@dataclass
class NodeContext:
    config: NodeConfig
    keys: NodeKeys
    trust_root: TrustRoot
    directory: Directory
    engine: AsyncEngine
    sessions: Sessions
    clock: Clock = field(default=utcnow)
    # Test-only crash points (node.core.testhooks); empty, and so inert, in production.
    crash_points: CrashPoints = field(default_factory=CrashPoints)
    # The audit log's origin and keys (node.trust.log_keys); None for a data dir made before them.
    audit: AuditIdentity | None = None
    # Called once a queued disclosure is committed: the deliverer wakes at once.
    queued_listeners: list[Callable[[], None]] = field(default_factory=list)
    # This process's group committers by purpose (node.storage.group_commit), made on first use.
    group_commits: dict[str, Any] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def now(self) -> dt.datetime:
        return self.clock()

    def disclosure_queued(self) -> None:
        """Tell this process's deliverer (if any) that there is new work."""
        for listener in self.queued_listeners:
            listener()

    async def close(self) -> None:
        await self.engine.dispose()


def load_keys(config: NodeConfig, unlocker: Unlocker | None = None) -> NodeKeys:
    unlocker = unlocker or Unlocker()
    keys_dir = config.keys_dir
    signing_path = keys_dir / "signing" / f"{config.signing_kid}.jwk"
    signing = load_jwk(signing_path, curve=SIGNING_CURVE, unlocker=unlocker)
    encryption_paths = sorted((keys_dir / "encryption").glob("*.jwk"))
    encryption = {
        str(key.kid): key
        for key in (
            load_jwk(path, curve=ENCRYPTION_CURVE, unlocker=unlocker) for path in encryption_paths
        )
    }
    if config.encryption_kid not in encryption:
        raise ConfigError("key_missing", f"active encryption key {config.encryption_kid} missing")
    tls = load_tls_identity(keys_dir / "tls" / f"{config.tls_pin}.crt", unlocker=unlocker)
    protected = tls.protected and all(
        is_wrapped(path.read_bytes()) for path in [signing_path, *encryption_paths]
    )
    return NodeKeys(
        signing=signing,
        encryption=encryption,
        active_encryption_kid=config.encryption_kid,
        tls=tls,
        unlocker=unlocker,
        protected=protected,
    )


def load_trust_root(path: Path) -> TrustRoot:
    try:
        return TrustRoot.from_document(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ConfigError("no_trust_root", f"no federation trust root at {path}") from exc
    except ValueError as exc:
        raise DirectoryError("trust_root_invalid", f"{path}: not JSON") from exc


def load_directory(path: Path, trust: TrustRoot, now: dt.datetime) -> Directory:
    """The directory the node holds, checked again (node.trust.acceptance.verify_held).

    An expired one is still loaded, loudly: the node then refuses traffic but
    keeps running, so that it can fetch a newer directory and recover.
    """
    try:
        signed = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("no_directory", f"no federation directory at {path}") from exc
    except ValueError as exc:
        raise DirectoryError("directory_malformed", f"{path}: not JSON") from exc
    directory = verify_held(signed, trust, now=now)
    if directory.is_expired(now):
        log.error(
            "directory_expired: version %s expired at %s; traffic is refused until a newer "
            "directory is installed or fetched",
            directory.version,
            directory.expires_at.isoformat(),
        )
    return directory


def open_node(
    data_dir: Path,
    *,
    clock: Clock = utcnow,
    database_url: str | None = None,
    unlocker: Unlocker | None = None,
) -> NodeContext:
    """Load config, keys, trust root and directory, and connect the database.

    Encrypted private keys are opened with ``unlocker``; by default the
    passphrase comes from ``PUENTE_KEY_PASSPHRASE`` (the CLI adds a file and a prompt).
    """
    config = load_config(data_dir)
    unlocker = unlocker or Unlocker(passphrase_source(None, interactive=False))
    keys = load_keys(config, unlocker)
    if not keys.protected:
        log.warning(
            "private_keys_unprotected: node %s keeps its private keys unencrypted; "
            "run `puente keys protect`",
            config.node_id,
        )
    trust = load_trust_root(config.trust_root_path)
    directory = load_directory(config.directory_path, trust, clock())
    if directory.node(config.node_id) is None:
        raise DirectoryError("not_a_member", f"{config.node_id} is not in the federation directory")
    engine = create_engine(database_url or config.database_url)
    return NodeContext(
        config=config,
        keys=keys,
        trust_root=trust,
        directory=directory,
        engine=engine,
        sessions=session_factory(engine),
        clock=clock,
        audit=(
            load_audit_identity(data_dir, unlocker) if (data_dir / AUDIT_FILE).exists() else None
        ),
    )
