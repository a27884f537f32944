"""A local federation on one machine: for the demo, tests and trying Puente out.

Initialises each node's data directory, creates a federation operator key,
signs a directory listing every node and installs it with the trust root.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.core.config import AuthorityConfig
from node.trust.directory import sign_directory
from node.trust.init_node import init_node
from node.trust.keys import public_jwk
from node.trust.operator import (
    create_operator_key,
    directory_document,
    publish,
    read_json,
    trust_root_document,
)


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    name: str
    authorities: tuple[AuthorityConfig, ...]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_local_federation(
    base: Path,
    specs: Sequence[NodeSpec],
    *,
    federation: str,
    now: dt.datetime,
    database_urls: Mapping[str, str] | None = None,
    public_urls: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Create every node under ``base/<id>`` and install a signed directory. Returns the dirs.

    ``public_urls`` overrides the endpoint the directory names for a node (a
    proxy in front of it, say); by default it is the node's own port.
    """
    node_dirs: dict[str, Path] = {}
    entries = []
    for spec in specs:
        config = init_node(
            base / spec.node_id,
            node_id=spec.node_id,
            name=spec.name,
            host="127.0.0.1",
            port=free_port(),
            authorities=list(spec.authorities),
            database_url=(database_urls or {}).get(spec.node_id),
            public_url=(public_urls or {}).get(spec.node_id),
            api_port=free_port(),
        )
        entries.append(read_json(config.node_entry_path))
        node_dirs[spec.node_id] = config.data_dir
    operator_key, _ = create_operator_key(base / "operator")
    operators = {"threshold": 1, "keys": [public_jwk(operator_key)]}
    document = directory_document(federation, entries, version=1, now=now, operators=operators)
    publish(
        node_dirs.values(),
        sign_directory(document, [operator_key]),
        trust_root_document(federation, [operator_key], threshold=1),
    )
    return node_dirs
