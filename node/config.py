"""A node's data directory and its TOML configuration.

Layout of a data directory (created by ``puente init``)::

    puente.toml              this configuration
    keys/signing/<kid>.jwk   Ed25519 private JWKs (0600)
    keys/encryption/<kid>.jwk X25519 private JWKs (0600)
    keys/tls/<pin>.key|.crt  TLS private key (0600) and self-signed certificate
    public/node-entry.json   this node's entry for the federation directory
    trust-root.json          the federation operator keys this node trusts
    directory.json           the newest verified, signed federation directory
    puente.db                the default SQLite database
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from node.errors import ConfigError

CONFIG_FILE = "puente.toml"
AUTHORITY_KINDS = ("consulate", "reception_centre", "migration_authority", "protection_agency")


@dataclass(frozen=True)
class AuthorityConfig:
    id: str
    kind: str
    names: dict[str, str]

    def as_directory_entry(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "names": dict(self.names)}


@dataclass(frozen=True)
class DeliveryConfig:
    """Outbox tuning: how often to look for work and how to back off."""

    poll_interval: float = 0.5
    retry_base: float = 1.0
    retry_max: float = 300.0
    message_ttl_hours: float = 72.0
    request_timeout: float = 30.0


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    node_id: str
    name: str
    host: str
    port: int
    public_url: str
    database_url: str
    signing_kid: str
    encryption_kid: str
    tls_pin: str
    authorities: tuple[AuthorityConfig, ...]
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def directory_path(self) -> Path:
        return self.data_dir / "directory.json"

    @property
    def trust_root_path(self) -> Path:
        return self.data_dir / "trust-root.json"

    @property
    def node_entry_path(self) -> Path:
        return self.data_dir / "public" / "node-entry.json"

    def to_toml(self) -> dict[str, Any]:
        return {
            "node": {"id": self.node_id, "name": self.name},
            "server": {"host": self.host, "port": self.port, "public_url": self.public_url},
            "database": {"url": self.database_url},
            "keys": {
                "signing": self.signing_kid,
                "encryption": self.encryption_kid,
                "tls": self.tls_pin,
            },
            "delivery": {
                "poll_interval": self.delivery.poll_interval,
                "retry_base": self.delivery.retry_base,
                "retry_max": self.delivery.retry_max,
                "message_ttl_hours": self.delivery.message_ttl_hours,
                "request_timeout": self.delivery.request_timeout,
            },
            "authorities": [a.as_directory_entry() for a in self.authorities],
        }

    def save(self) -> None:
        path = self.data_dir / CONFIG_FILE
        path.write_text(tomli_w.dumps(self.to_toml()), encoding="utf-8")


def default_database_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir.resolve() / 'puente.db'}"


def load_config(data_dir: Path) -> NodeConfig:
    """Read ``puente.toml`` from a data directory, refusing what is missing or wrong."""
    path = data_dir / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("no_config", f"no {CONFIG_FILE} in {data_dir}; run puente init") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("bad_config", f"{path}: {exc}") from exc
    try:
        node, server, keys = raw["node"], raw["server"], raw["keys"]
        authorities = tuple(
            AuthorityConfig(id=a["id"], kind=a["kind"], names=dict(a["names"]))
            for a in raw.get("authorities", [])
        )
        delivery = DeliveryConfig(**raw.get("delivery", {}))
        config = NodeConfig(
            data_dir=data_dir,
            node_id=str(node["id"]),
            name=str(node["name"]),
            host=str(server["host"]),
            port=int(server["port"]),
            public_url=str(server["public_url"]),
            database_url=str(raw.get("database", {}).get("url") or default_database_url(data_dir)),
            signing_kid=str(keys["signing"]),
            encryption_kid=str(keys["encryption"]),
            tls_pin=str(keys["tls"]),
            authorities=authorities,
            delivery=delivery,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError("bad_config", f"{path}: missing or invalid {exc}") from exc
    for authority in authorities:
        if authority.kind not in AUTHORITY_KINDS:
            raise ConfigError("bad_config", f"authority {authority.id}: unknown kind")
    return config
