"""The audit log's identity: its origin, its checkpoint key, its witness key, its pseudonym secret.

Created once by ``puente init`` and never replaced silently:

    audit.toml                 origin, witness name, checkpoint interval
    keys/audit-log/<kid>.jwk   Ed25519 key that signs this node's checkpoints (0600)
    keys/witness/<kid>.jwk     Ed25519 key that cosigns peers' checkpoints (0600)
    keys/case-ref.key          32 random bytes: the HMAC key of case pseudonyms (0600)

The checkpoint key and the witness key are distinct, as tlog-cosignature asks
of Ed25519 cosigners: a signature made for one role can never be read as one
made for the other.
"""

from __future__ import annotations

import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.note import COSIGNATURE_V1, ED25519
from node.core.canonical import b64url_decode
from node.core.errors import ConfigError
from node.trust.at_rest import Unlocker
from node.trust.keys import (
    SIGNING_CURVE,
    generate_signing_key,
    load_jwk,
    read_private_file,
    save_jwk,
    write_private_file,
)
from node.trust.note_signing import verifier_key

AUDIT_FILE = "audit.toml"
ORIGIN_PREFIX = "puente.int/audit"
WITNESS_PREFIX = "puente.int/witness"
DEFAULT_CHECKPOINT_INTERVAL = 60.0


@dataclass(frozen=True)
class AuditIdentity:
    origin: str
    log_key: Ed25519PrivateKey
    witness_name: str
    witness_key: Ed25519PrivateKey
    case_secret: bytes
    checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL

    @property
    def verifier_key(self) -> str:
        """The log's C2SP verifier key (signature type 0x01), named by its origin."""
        return verifier_key(self.origin, self.log_key, sig_type=ED25519)

    @property
    def witness_verifier_key(self) -> str:
        """This node's cosigner key (tlog-cosignature type 0x04)."""
        return verifier_key(self.witness_name, self.witness_key, sig_type=COSIGNATURE_V1)

    def directory_entry(self) -> dict[str, str]:
        """The node entry's optional ``audit_log`` member in the federation directory."""
        return {
            "origin": self.origin,
            "verifier_key": self.verifier_key,
            "witness_key": self.witness_verifier_key,
        }


def _ed25519(path: Path, unlocker: Unlocker | None = None) -> Ed25519PrivateKey:
    jwk = load_jwk(path, curve=SIGNING_CURVE, unlocker=unlocker).as_dict(private=True)
    return Ed25519PrivateKey.from_private_bytes(b64url_decode(str(jwk["d"])))


def create_audit_identity(
    data_dir: Path, node_id: str, *, passphrase: bytes | None = None
) -> AuditIdentity:
    """Generate the keys and write ``audit.toml``; refuses if one exists."""
    path = data_dir / AUDIT_FILE
    if path.exists():
        raise ConfigError("already_initialised", f"{path} already names this node's audit log")
    instance = secrets.token_hex(4)  # a re-initialised node starts a new log, with a new origin
    log_jwk, witness_jwk = generate_signing_key(), generate_signing_key()
    save_jwk(data_dir / "keys" / "audit-log", log_jwk, passphrase=passphrase)
    save_jwk(data_dir / "keys" / "witness", witness_jwk, passphrase=passphrase)
    write_private_file(data_dir / "keys" / "case-ref.key", secrets.token_bytes(32))
    doc: dict[str, Any] = {
        "log": {"origin": f"{ORIGIN_PREFIX}/{node_id}/{instance}", "key": str(log_jwk.kid)},
        "witness": {"name": f"{WITNESS_PREFIX}/{node_id}/{instance}", "key": str(witness_jwk.kid)},
        "checkpoints": {"interval_seconds": DEFAULT_CHECKPOINT_INTERVAL},
    }
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load_audit_identity(
        data_dir, Unlocker.with_passphrase(passphrase.decode()) if passphrase else None
    )


def load_audit_identity(data_dir: Path, unlocker: Unlocker | None = None) -> AuditIdentity:
    """Read ``audit.toml`` and the keys it names (unlocking them if they are protected)."""
    path = data_dir / AUDIT_FILE
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        log, witness = doc["log"], doc["witness"]
        interval = float(doc.get("checkpoints", {}).get("interval_seconds", 60.0))
        return AuditIdentity(
            origin=str(log["origin"]),
            log_key=_ed25519(data_dir / "keys" / "audit-log" / f"{log['key']}.jwk", unlocker),
            witness_name=str(witness["name"]),
            witness_key=_ed25519(data_dir / "keys" / "witness" / f"{witness['key']}.jwk", unlocker),
            case_secret=read_private_file(data_dir / "keys" / "case-ref.key"),
            checkpoint_interval=interval,
        )
    except FileNotFoundError as exc:
        raise ConfigError("no_audit_identity", f"{path} missing; re-run puente init") from exc
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError("bad_config", f"{path}: {exc}") from exc
