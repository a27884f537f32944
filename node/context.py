"""Everything a running node holds: config, keys, directory, database, clock.

Built once by :func:`open_node` and passed explicitly to the server, the
outbox and the CLI (no global service locator).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from joserfc.jwk import OKPKey
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from node.audit_keys import AUDIT_FILE, AuditIdentity, load_audit_identity
from node.config import NodeConfig, load_config
from node.directory import Directory, TrustRoot, verify_directory
from node.errors import ConfigError, DirectoryError
from node.keys import ENCRYPTION_CURVE, SIGNING_CURVE, TlsIdentity, load_jwk, load_tls_identity
from node.storage import audit_models, delivery_models  # noqa: F401  (register their tables)
from node.storage.engine import create_engine, session_factory
from node.testhooks import CrashPoints
from node.timeutil import Clock, utcnow


@dataclass
class NodeKeys:
    """This node's private keys: the active ones and those kept to open old mail."""

    signing: OKPKey
    encryption: dict[str, OKPKey]
    active_encryption_kid: str
    tls: TlsIdentity


@dataclass
class NodeContext:
    config: NodeConfig
    keys: NodeKeys
    trust_root: TrustRoot
    directory: Directory
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock = field(default=utcnow)
    # Test-only crash points (node.testhooks); empty, and so inert, in production.
    crash_points: CrashPoints = field(default_factory=CrashPoints)
    # The audit log's origin and keys (node.audit_keys); None for a data dir made before them.
    audit: AuditIdentity | None = None

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def now(self) -> dt.datetime:
        return self.clock()

    async def close(self) -> None:
        await self.engine.dispose()


def load_keys(config: NodeConfig) -> NodeKeys:
    keys_dir = config.keys_dir
    signing = load_jwk(keys_dir / "signing" / f"{config.signing_kid}.jwk", curve=SIGNING_CURVE)
    encryption = {
        str(key.kid): key
        for key in (
            load_jwk(path, curve=ENCRYPTION_CURVE)
            for path in sorted((keys_dir / "encryption").glob("*.jwk"))
        )
    }
    if config.encryption_kid not in encryption:
        raise ConfigError("key_missing", f"active encryption key {config.encryption_kid} missing")
    tls = load_tls_identity(keys_dir / "tls" / f"{config.tls_pin}.crt")
    return NodeKeys(
        signing=signing,
        encryption=encryption,
        active_encryption_kid=config.encryption_kid,
        tls=tls,
    )


def load_trust_root(path: Path) -> TrustRoot:
    try:
        return TrustRoot.from_document(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ConfigError("no_trust_root", f"no federation trust root at {path}") from exc
    except ValueError as exc:
        raise DirectoryError("trust_root_invalid", f"{path}: not JSON") from exc


def load_directory(path: Path, trust: TrustRoot, now: dt.datetime) -> Directory:
    try:
        signed = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("no_directory", f"no federation directory at {path}") from exc
    except ValueError as exc:
        raise DirectoryError("directory_malformed", f"{path}: not JSON") from exc
    return verify_directory(signed, trust, now=now)


def open_node(
    data_dir: Path, *, clock: Clock = utcnow, database_url: str | None = None
) -> NodeContext:
    """Load config, keys, trust root and directory, and connect the database."""
    config = load_config(data_dir)
    keys = load_keys(config)
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
        audit=load_audit_identity(data_dir) if (data_dir / AUDIT_FILE).exists() else None,
    )
