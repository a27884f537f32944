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

import dataclasses
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from node.core.errors import ConfigError
from node.core.limits import MAX_BATCH_MESSAGES

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
    """Outbox tuning and the limits each peer is held to (docs/delivery.md).

    Sending: how often to look for work, how to back off, how many requests may
    be in flight to one peer (1 keeps strict order), how fast to send to one
    peer, and how long to wait for it. Receiving: how fast and how many at
    once one peer may send to us, and how long it may take to send a body.
    """

    poll_interval: float = 0.5
    retry_base: float = 1.0
    retry_max: float = 300.0
    message_ttl_hours: float = 72.0
    request_timeout: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    max_in_flight: int = 1
    batch_size: int = 64
    messages_per_request: int = 64  # 1: one message a request (POST /federation/v1/messages)
    send_rate_per_peer: float = 500.0
    send_burst_per_peer: int = 50
    inbound_rate_per_peer: float = 1000.0
    inbound_burst_per_peer: int = 500
    inbound_max_concurrent_per_peer: int = 16
    inbound_body_timeout: float = 30.0
    # The witness endpoint (C2SP add-checkpoint): a round sends one request per
    # member's log, so a peer needs few; each refusal is an audit write.
    witness_rate_per_peer: float = 2.0
    witness_burst_per_peer: int = 60
    witness_max_concurrent_per_peer: int = 4

    def __post_init__(self) -> None:
        # Refused by load_config as bad_config: a zero limit would stall delivery.
        if min(self.max_in_flight, self.batch_size, self.send_burst_per_peer) < 1:
            raise ValueError("delivery limits must be at least 1")
        if not 1 <= self.messages_per_request <= MAX_BATCH_MESSAGES:
            raise ValueError(f"messages_per_request must be 1 to {MAX_BATCH_MESSAGES}")
        if (
            min(
                self.inbound_burst_per_peer,
                self.inbound_max_concurrent_per_peer,
                self.witness_burst_per_peer,
                self.witness_max_concurrent_per_peer,
            )
            < 1
        ):
            raise ValueError("inbound limits must be at least 1")
        if (
            min(
                self.send_rate_per_peer,
                self.inbound_rate_per_peer,
                self.witness_rate_per_peer,
                self.retry_base,
                self.inbound_body_timeout,
            )
            <= 0
        ):
            raise ValueError("rates, timeouts and retry_base must be positive")


@dataclass(frozen=True)
class PortLimits:
    """How long a connection to one listening port may take at each phase (docs/limits.md).

    ``tls_handshake_timeout``: from the TCP connection to the end of the TLS
    handshake (a client that connects and never starts TLS is closed then).
    ``idle_timeout``: how long a connection may wait for the complete head
    (request line and headers) of its next request — the first one or the
    next on a kept-alive connection; a client trickling its headers is cut
    off then. The body's own limit is the port's body timeout. The sizes
    bound a request head before anything reads it.
    """

    tls_handshake_timeout: float = 10.0
    idle_timeout: float = 15.0
    max_request_line: int = 8190
    max_header_field: int = 8190
    max_headers: int = 64

    def __post_init__(self) -> None:
        if min(self.tls_handshake_timeout, self.idle_timeout) <= 0:
            raise ValueError("port timeouts must be positive")
        if min(self.max_request_line, self.max_header_field, self.max_headers) < 1:
            raise ValueError("request head limits must be at least 1")


@dataclass(frozen=True)
class ApiConfig:
    """The local API for the node's own users (HTTPS with the node's certificate)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: no local API
    rate_per_second: float = 50.0
    burst: int = 200
    max_body_bytes: int = 262_144
    body_timeout: float = 30.0
    # Before a token is checked, per client address (node.api.preauth): a flood of
    # made-up tokens is refused here, and audited once a source a minute.
    preauth_rate_per_second: float = 20.0
    preauth_burst: int = 100
    limits: PortLimits = field(default_factory=PortLimits)

    def __post_init__(self) -> None:
        if min(self.rate_per_second, self.preauth_rate_per_second, self.body_timeout) <= 0:
            raise ValueError("api rates and body_timeout must be positive")
        if min(self.burst, self.preauth_burst, self.max_body_bytes) < 1:
            raise ValueError("api bursts and max_body_bytes must be at least 1")


@dataclass(frozen=True)
class CaseworkConfig:
    """The origin's own cases (docs/consent-and-policy.md §8).

    ``retention_days``: a case not changed for this long is crypto-shredded
    by the lifecycle sweep; 0 keeps cases until they are erased by hand.
    """

    retention_days: float = 0.0

    def __post_init__(self) -> None:
        if self.retention_days < 0:
            raise ValueError("casework retention_days must not be negative")


@dataclass(frozen=True)
class FederationConfig:
    """Where newer directories come from, and when to warn of expiry (docs/directory.md).

    ``sources`` are ``https://`` or ``file://`` URLs of a signed directory;
    with ``fetch_from_peers`` the node also asks each member over mutual TLS.
    """

    sources: tuple[str, ...] = ()
    fetch_from_peers: bool = True
    refresh_interval: float = 300.0
    warn_days: float = 7.0
    critical_days: float = 1.0

    def __post_init__(self) -> None:
        if self.refresh_interval <= 0 or not 0 < self.critical_days <= self.warn_days:
            raise ValueError("refresh_interval must be positive and critical_days <= warn_days")
        for source in self.sources:
            if not source.startswith(("https://", "file://")):
                raise ValueError(f"federation source {source!r} is not https:// or file://")


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
    api: ApiConfig = field(default_factory=ApiConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    # IANA time zone of the node's people: a date typed without a time is a day here.
    time_zone: str = "UTC"
    # The federation port's connection limits ([server.limits]).
    server_limits: PortLimits = field(default_factory=PortLimits)
    casework: CaseworkConfig = field(default_factory=CaseworkConfig)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

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
            "node": {"id": self.node_id, "name": self.name, "time_zone": self.time_zone},
            "server": {
                "host": self.host,
                "port": self.port,
                "public_url": self.public_url,
                "limits": dataclasses.asdict(self.server_limits),
            },
            "database": {"url": self.database_url},
            "keys": {
                "signing": self.signing_kid,
                "encryption": self.encryption_kid,
                "tls": self.tls_pin,
            },
            "api": dataclasses.asdict(self.api),
            # Every setting, so a saved config shows them all (and none is lost).
            "delivery": dataclasses.asdict(self.delivery),
            "casework": dataclasses.asdict(self.casework),
            "federation": {
                "sources": list(self.federation.sources),
                "fetch_from_peers": self.federation.fetch_from_peers,
                "refresh_interval": self.federation.refresh_interval,
                "warn_days": self.federation.warn_days,
                "critical_days": self.federation.critical_days,
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
        api_raw = dict(raw.get("api", {}))
        api = ApiConfig(**{**api_raw, "limits": PortLimits(**api_raw.get("limits", {}))})
        federation_raw = dict(raw.get("federation", {}))
        federation = FederationConfig(
            **{**federation_raw, "sources": tuple(federation_raw.get("sources", ()))}
        )
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
            api=api,
            federation=federation,
            time_zone=str(node.get("time_zone", "UTC")),
            server_limits=PortLimits(**server.get("limits", {})),
            casework=CaseworkConfig(**raw.get("casework", {})),
        )
        config.zone  # noqa: B018 - refuse an unknown zone now, not at the first query
    except zoneinfo.ZoneInfoNotFoundError as exc:
        raise ConfigError(
            "bad_config",
            f"{path}: [node] time_zone is not an IANA time zone, e.g. America/Guatemala",
        ) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError("bad_config", f"{path}: missing or invalid {exc}") from exc
    for authority in authorities:
        if authority.kind not in AUTHORITY_KINDS:
            raise ConfigError("bad_config", f"authority {authority.id}: unknown kind")
    return config
