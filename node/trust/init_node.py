"""``puente init``: create a node's data directory with fresh keys."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from node.core.config import (
    AUTHORITY_KINDS,
    ApiConfig,
    AuthorityConfig,
    NodeConfig,
    default_database_url,
)
from node.core.errors import ConfigError
from node.trust.directory import tls_entry
from node.trust.keys import (
    generate_encryption_key,
    generate_signing_key,
    generate_tls_identity,
    public_jwk,
    save_jwk,
)
from node.trust.log_keys import create_audit_identity

_NODE_ID = re.compile(r"^[A-Z]{2}$")
_AUTHORITY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


def init_node(
    data_dir: Path,
    *,
    node_id: str,
    name: str,
    host: str,
    port: int,
    authorities: list[AuthorityConfig],
    public_url: str | None = None,
    database_url: str | None = None,
    api_port: int = 0,
    passphrase: bytes | None = None,
) -> NodeConfig:
    """Create the data directory, generate every key and write the config.

    Refuses to touch a directory that already holds a node: keys are never
    silently replaced.
    """
    if not _NODE_ID.match(node_id):
        raise ConfigError("bad_node_id", "a node id is an ISO 3166-1 alpha-2 code, e.g. MX")
    if not authorities:
        raise ConfigError("no_authority", "a node serves at least one authority")
    for authority in authorities:
        if authority.kind not in AUTHORITY_KINDS or not _AUTHORITY_ID.match(authority.id):
            raise ConfigError("bad_authority", f"authority {authority.id!r}: bad id or kind")
    if (data_dir / "puente.toml").exists():
        raise ConfigError("already_initialised", f"{data_dir} already holds a node")
    data_dir.mkdir(parents=True, exist_ok=True)
    url = public_url or f"https://{host}:{port}"
    tls_host = urlsplit(url).hostname or host
    signing = generate_signing_key()
    encryption = generate_encryption_key()
    # With a passphrase the private keys are encrypted at rest (node.trust.at_rest).
    save_jwk(data_dir / "keys" / "signing", signing, passphrase=passphrase)
    save_jwk(data_dir / "keys" / "encryption", encryption, passphrase=passphrase)
    tls = generate_tls_identity(
        data_dir / "keys" / "tls", node_id, sorted({host, tls_host}), passphrase=passphrase
    )
    audit_log = create_audit_identity(data_dir, node_id, passphrase=passphrase)
    config = NodeConfig(
        data_dir=data_dir,
        node_id=node_id,
        name=name,
        host=host,
        port=port,
        public_url=url,
        database_url=database_url or default_database_url(data_dir),
        signing_kid=str(signing.kid),
        encryption_kid=str(encryption.kid),
        tls_pin=tls.pin,
        authorities=tuple(authorities),
        api=ApiConfig(host=host, port=api_port),
    )
    config.save()
    entry: dict[str, Any] = {
        "id": node_id,
        "name": name,
        "endpoint": url,
        "tls": [tls_entry(tls.cert_der)],
        "signing_keys": [public_jwk(signing)],
        "encryption_keys": [public_jwk(encryption)],
        "authorities": [a.as_directory_entry() for a in authorities],
        "audit_log": audit_log.directory_entry(),
    }
    config.node_entry_path.parent.mkdir(parents=True, exist_ok=True)
    config.node_entry_path.write_text(json.dumps(entry, indent=2), encoding="utf-8")
    return config
