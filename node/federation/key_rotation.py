"""A node's side of key rotation: make the new key, publish it first, switch when due.

Rotation without downtime (docs/directory.md, "Key rotation"):

1. ``puente keys rotate`` generates the new key (kept encrypted at rest when
   the node's keys are), and writes the node's updated directory entry: the new
   key with ``nbf`` some time ahead, the old one with ``exp`` after an overlap.
2. Operators put the entry in the next directory version and sign it.
3. The running node uses, for each kind, the newest key that the directory it
   holds publishes, that is in force now, and whose private half it holds
   (:func:`select_active`). So it switches only once the key is published, and
   at ``nbf``, by which time peers have the directory too. Old private
   encryption keys stay, to open envelopes sealed to them while in flight.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from node.auditlog import entries as audit
from node.core.canonical import b64url_decode
from node.core.config import NodeConfig, load_config
from node.core.errors import ConfigError, KeyStoreError
from node.core.logs import get_logger
from node.storage.context import NodeContext
from node.trust.at_rest import Unlocker, is_wrapped
from node.trust.directory import MemberNode, tls_entry
from node.trust.keys import (
    ENCRYPTION_CURVE,
    SIGNING_CURVE,
    generate_encryption_key,
    generate_signing_key,
    generate_tls_identity,
    load_jwk,
    load_tls_identity,
    public_jwk,
    save_jwk,
)
from node.trust.validity import newest_in_force, to_numeric_date

log = get_logger(__name__)

KINDS: Final = ("signing", "encryption", "tls")
_LIST_NAMES: Final = {"signing": "signing_keys", "encryption": "encryption_keys", "tls": "tls"}
DEFAULT_LEAD: Final = dt.timedelta(hours=24)
DEFAULT_OVERLAP: Final = dt.timedelta(days=7)


@dataclass(frozen=True)
class Rotation:
    """What ``puente keys rotate`` made."""

    kind: str
    new_id: str  # kid, or the certificate pin for TLS
    not_before: dt.datetime
    old_expire: dt.datetime
    entry_path: Path
    protected: bool


def select_active(
    member: MemberNode, kind: str, held: Collection[str], now: dt.datetime
) -> str | None:
    """The key (kid or pin) a node should use now: published, in force and held privately."""
    published = {
        "signing": list(member.signing_keys),
        "encryption": list(member.encryption_keys),
        "tls": list(member.tls_certificates),
    }[kind]
    return newest_in_force(
        [(key_id, member.key_validity(key_id)) for key_id in published if key_id in held], now
    )


def with_rotated_key(
    entry: dict[str, Any],
    kind: str,
    new_member: dict[str, Any],
    *,
    not_before: dt.datetime,
    overlap: dt.timedelta,
) -> dict[str, Any]:
    """The node entry with a new key published from ``not_before``, the old ones ending later.

    Keys of that kind that have no ``exp`` yet get ``not_before + overlap``: they
    verify what they signed before the switch, and the margin covers a node that
    switches late.
    """
    updated = json.loads(json.dumps(entry))
    members = updated[_LIST_NAMES[kind]]
    for member in members:
        if "exp" not in member and "revoked" not in member:
            member["exp"] = to_numeric_date(not_before + overlap)
    members.append({**new_member, "nbf": to_numeric_date(not_before)})
    return dict(updated)


def own_entry(config: NodeConfig) -> dict[str, Any]:
    """This node's entry: as its held directory publishes it, plus keys still to be published.

    The directory's entry is authoritative (operators may have set validity or
    revoked a key); keys that ``public/node-entry.json`` lists and the
    directory does not yet (an earlier rotation awaiting publication) are kept.
    """
    proposed = _read_entry(config.node_entry_path)
    published = _published_entry(config)
    if published is None:
        if proposed is None:
            raise ConfigError("no_node_entry", f"no {config.node_entry_path} and no directory")
        return proposed
    if proposed is not None:
        for list_name in _LIST_NAMES.values():
            ids = {_member_id(m) for m in published[list_name]}
            published[list_name].extend(
                m for m in proposed.get(list_name, []) if _member_id(m) not in ids
            )
    return published


def _read_entry(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return dict(value) if isinstance(value, dict) else None


def _published_entry(config: NodeConfig) -> dict[str, Any] | None:
    try:
        signed = json.loads(config.directory_path.read_text(encoding="utf-8"))
        document = json.loads(b64url_decode(signed["payload"]))
        for node in document["nodes"]:
            if node["id"] == config.node_id:
                return dict(node)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no usable directory yet
    return None


def _member_id(member: dict[str, Any]) -> str:
    return str(member.get("kid") or member["x5t#S256"])


def keys_protected(config: NodeConfig) -> bool:
    """Are the node's existing private keys encrypted? (Then new ones must be too.)"""
    files = [*(config.keys_dir / "signing").glob("*.jwk")]
    return any(is_wrapped(path.read_bytes()) for path in files)


def rotate_key(
    data_dir: Path,
    kind: str,
    *,
    now: dt.datetime,
    lead: dt.timedelta = DEFAULT_LEAD,
    overlap: dt.timedelta = DEFAULT_OVERLAP,
    unlocker: Unlocker | None = None,
) -> Rotation:
    """Generate a new key of ``kind`` and write the node entry that publishes it."""
    if kind not in KINDS:
        raise ConfigError("bad_key_kind", f"kind is one of {', '.join(KINDS)}")
    if lead < dt.timedelta(0) or overlap <= dt.timedelta(0):
        raise ConfigError("bad_rotation_window", "lead must be >= 0 and overlap > 0")
    config = load_config(data_dir)
    passphrase = _passphrase_for_new_key(config, unlocker or Unlocker())
    entry = own_entry(config)
    not_before = now + lead
    if kind == "signing":
        key = generate_signing_key()
        save_jwk(config.keys_dir / "signing", key, passphrase=passphrase)
        new_id, member = str(key.kid), public_jwk(key)
    elif kind == "encryption":
        key = generate_encryption_key()
        save_jwk(config.keys_dir / "encryption", key, passphrase=passphrase)
        new_id, member = str(key.kid), public_jwk(key)
    else:
        hosts = _tls_hosts(config)
        identity = generate_tls_identity(
            config.keys_dir / "tls", config.node_id, hosts, passphrase=passphrase
        )
        new_id, member = identity.pin, tls_entry(identity.cert_der)
    updated = with_rotated_key(entry, kind, member, not_before=not_before, overlap=overlap)
    config.node_entry_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.node_entry_path.with_name(config.node_entry_path.name + ".tmp")
    tmp.write_text(json.dumps(updated, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(config.node_entry_path)
    return Rotation(
        kind=kind,
        new_id=new_id,
        not_before=not_before,
        old_expire=not_before + overlap,
        entry_path=config.node_entry_path,
        protected=passphrase is not None,
    )


def _passphrase_for_new_key(config: NodeConfig, unlocker: Unlocker) -> bytes | None:
    """The passphrase to encrypt a new key with; checked against an existing key first."""
    if not keys_protected(config):
        return unlocker.passphrase()
    passphrase = unlocker.require()
    # A typo here would lock the new key under a passphrase nobody knows: open one first.
    load_jwk(
        config.keys_dir / "signing" / f"{config.signing_kid}.jwk",
        curve=SIGNING_CURVE,
        unlocker=Unlocker.with_passphrase(passphrase.decode("utf-8")),
    )
    return passphrase


def _tls_hosts(config: NodeConfig) -> list[str]:
    return sorted({config.host, urlsplit(config.public_url).hostname or config.host})


# --- switching the running node -------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """Which active keys changed (kind -> (old id, new id))."""

    changed: dict[str, tuple[str, str]]

    @property
    def tls_changed(self) -> bool:
        return "tls" in self.changed


async def activate_due_keys(ctx: NodeContext) -> Activation:
    """Load new private keys and switch each kind to :func:`select_active`'s choice.

    Also loads every encryption key file not yet held, so envelopes sealed to
    a key published a moment ago open. Persists the active ids in
    ``puente.toml`` and audits ``keys.activated``.
    """
    now = ctx.now()
    member = ctx.directory.node(ctx.node_id)
    if member is None:
        return Activation({})
    keys_dir = ctx.config.keys_dir
    for path in sorted((keys_dir / "encryption").glob("*.jwk")):
        if path.stem not in ctx.keys.encryption:
            key = load_jwk(path, curve=ENCRYPTION_CURVE, unlocker=ctx.keys.unlocker)
            ctx.keys.encryption[str(key.kid)] = key
    current = {
        "signing": str(ctx.keys.signing.kid),
        "encryption": ctx.keys.active_encryption_kid,
        "tls": ctx.keys.tls.pin,
    }
    held = {
        "signing": {p.stem for p in (keys_dir / "signing").glob("*.jwk")},
        "encryption": set(ctx.keys.encryption),
        "tls": {p.stem for p in (keys_dir / "tls").glob("*.crt")},
    }
    changed: dict[str, tuple[str, str]] = {}
    for kind in KINDS:
        chosen = select_active(member, kind, held[kind], now)
        if chosen is None:
            if current[kind] not in held[kind] or not _in_force(member, current[kind], now):
                log.error("no_key_in_force", kind=kind, node=ctx.node_id)
            continue
        if chosen == current[kind]:
            continue
        try:
            _switch(ctx, kind, chosen)
        except KeyStoreError as exc:
            log.error("key_activation_failed", kind=kind, key=chosen, reason=exc.reason)
            continue
        changed[kind] = (current[kind], chosen)
    if changed:
        ctx.config = dataclasses.replace(
            ctx.config,
            signing_kid=str(ctx.keys.signing.kid),
            encryption_kid=ctx.keys.active_encryption_kid,
            tls_pin=ctx.keys.tls.pin,
        )
        ctx.config.save()
        async with ctx.sessions.begin() as session:
            await audit.append(
                session,
                node=ctx.node_id,
                event="keys.activated",
                at=now,
                keys={kind: new for kind, (_old, new) in changed.items()},
                previous={kind: old for kind, (old, _new) in changed.items()},
                directory_version=ctx.directory.version,
            )
        log.info("keys_activated", **{kind: new for kind, (_old, new) in changed.items()})
    return Activation(changed)


def _in_force(member: MemberNode, key_id: str, now: dt.datetime) -> bool:
    return member.key_validity(key_id).in_force(now)


def _switch(ctx: NodeContext, kind: str, key_id: str) -> None:
    keys_dir = ctx.config.keys_dir
    if kind == "signing":
        ctx.keys.signing = load_jwk(
            keys_dir / "signing" / f"{key_id}.jwk", curve=SIGNING_CURVE, unlocker=ctx.keys.unlocker
        )
    elif kind == "encryption":
        ctx.keys.active_encryption_kid = key_id
    else:
        ctx.keys.tls = load_tls_identity(
            keys_dir / "tls" / f"{key_id}.crt", unlocker=ctx.keys.unlocker
        )
