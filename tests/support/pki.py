"""An in-memory test federation built with the real key, directory and envelope code.

``build_federation`` generates, for every node, an Ed25519 signing key, an X25519
encryption key and a self-signed TLS identity (node.trust.keys), plus federation
operator keys; it builds the directory document, signs it (node.trust.directory), and
verifies it against the trust root, exactly as a node would on start-up.
Everything is synthetic: invented authority names, ``.test`` host names.

    fed = build_federation([("MX", "mx-inm-test", "migration_authority"),
                            ("GT", "gt-reception-test", "reception_centre")], now=NOW,
                           tls_dir=tmp_path)
    envelope = fed.seal(fed.message("MX", "GT"))
    opened = fed.open(envelope, "GT")
"""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from joserfc.jwk import OKPKey

from node.core.schemas import RETURN_NOTICE
from node.trust.acceptance import verify_directory
from node.trust.directory import Directory, TrustRoot, sign_directory, tls_entry
from node.trust.keys import (
    TlsIdentity,
    generate_encryption_key,
    generate_signing_key,
    generate_tls_identity,
    public_jwk,
)
from node.trust.operator import directory_document, trust_root_document
from node.wire.envelope import Message, OpenedEnvelope, Party, open_envelope, seal

FEDERATION = "test-federation"
DIRECTORY_VALIDITY = dt.timedelta(days=30)
DEFAULT_LIFETIME = dt.timedelta(hours=1)


def sample_return_notice(case_ref: str = "TEST-2025-000001") -> dict[str, Any]:
    """A schema-valid return notice about an invented person."""
    return {
        "case_ref": case_ref,
        "person": {
            "given_names": "Ana Prueba",
            "family_names": "Ejemplo Ficticia",
            "age_estimate": 29,
            "age_status": "adult",
            "nationality": "GT",
            "languages": ["es", "mam"],
        },
        "arrival": {
            "date": "2025-03-14",
            "time": "09:30",
            "place_of_entry": "Punto de entrada de prueba",
            "means": "air",
            "transport_reference": "TEST-101",
        },
        "accompanying_children": [
            {"given_names": "Niña Prueba", "age": 4, "relationship": "daughter"}
        ],
        "immediate_needs": ["food", "medical_care"],
        "priority_flags": ["alone_with_children", "needs_interpreter"],
    }


@dataclass(frozen=True)
class TestNode:
    """One member node's private material and directory entry."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    id: str
    authority: str
    authority_kind: str
    signing_key: OKPKey
    encryption_key: OKPKey
    tls: TlsIdentity
    entry: Mapping[str, Any]

    @property
    def party(self) -> Party:
        return Party(self.id, self.authority)

    @property
    def encryption_keys(self) -> dict[str, OKPKey]:
        """The ``own_encryption_keys`` mapping open_envelope expects (kid -> private key)."""
        return {str(self.encryption_key.kid): self.encryption_key}


@dataclass(frozen=True)
class TestFederation:
    """A verified directory, its trust root and every node's private keys."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    now: dt.datetime
    nodes: Mapping[str, TestNode]
    operator_keys: Sequence[OKPKey]
    trust_root_document: Mapping[str, Any]
    trust_root: TrustRoot
    document: Mapping[str, Any]
    signed_directory: Mapping[str, Any]
    directory: Directory
    tls_dir: Path = field(repr=False)

    @property
    def operator_key(self) -> OKPKey:
        """The (first) federation operator signing key."""
        return self.operator_keys[0]

    def node(self, node_id: str) -> TestNode:
        return self.nodes[node_id]

    def message(
        self,
        sender: str,
        recipient: str,
        *,
        body: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_LIFETIME,
        message_id: str | None = None,
        doc_type: str = "return_notice",
        schema: str = RETURN_NOTICE,
    ) -> Message:
        """A return notice from ``sender``'s authority to ``recipient``'s, fresh uuid4 id."""
        issued = now or self.now
        return Message(
            message_id=message_id or str(uuid.uuid4()),
            sender=self.nodes[sender].party,
            recipient=self.nodes[recipient].party,
            doc_type=doc_type,
            schema=schema,
            issued_at=int(issued.timestamp()),
            expires_at=int((issued + lifetime).timestamp()),
            body=sample_return_notice() if body is None else body,
        )

    def seal(self, message: Message, *, to: str | None = None) -> bytes:
        """Seal as the sender node would, to ``to``'s key (default: the addressee's)."""
        recipient = self.nodes[to or message.recipient.node]
        sealed = seal(
            message,
            signing_key=self.nodes[message.sender.node].signing_key,
            recipient_key=recipient.encryption_key,
        )
        return sealed.encode("ascii")

    def open(
        self,
        envelope: bytes,
        as_node: str,
        *,
        now: dt.datetime | None = None,
        peer_node: str | None = None,
    ) -> OpenedEnvelope:
        """Open an envelope as ``as_node`` would, with its private keys and the directory."""
        return open_envelope(
            envelope,
            own_node=as_node,
            own_encryption_keys=self.nodes[as_node].encryption_keys,
            directory=self.directory,
            now=now or self.now,
            peer_node=peer_node,
        )


def node_entry(
    node_id: str,
    authority: str,
    kind: str,
    *,
    signing_key: OKPKey,
    encryption_key: OKPKey,
    tls: TlsIdentity,
) -> dict[str, Any]:
    """A directory entry for one node, as ``puente init`` writes it."""
    return {
        "id": node_id,
        "name": f"Test node {node_id}",
        "endpoint": f"https://{node_id.lower()}.puente.test:8443",
        "tls": [tls_entry(tls.cert_der)],
        "signing_keys": [public_jwk(signing_key)],
        "encryption_keys": [public_jwk(encryption_key)],
        "authorities": [
            {"id": authority, "kind": kind, "names": {"en": f"Test authority {authority}"}}
        ],
    }


def build_federation(
    nodes: list[tuple[str, str, str]],
    *,
    now: dt.datetime,
    tls_dir: Path | None = None,
    operators: int = 1,
    threshold: int = 1,
    version: int = 1,
) -> TestFederation:
    """Build a federation of ``(node_id, authority_id, authority_kind)`` nodes.

    TLS private keys are written (mode 0600) under ``tls_dir``; pass pytest's
    ``tmp_path`` so they are cleaned up. Without it a fresh temporary directory
    is created and left to the operating system.
    """
    base = tls_dir if tls_dir is not None else Path(tempfile.mkdtemp(prefix="puente-pki-"))
    members: dict[str, TestNode] = {}
    for node_id, authority, kind in nodes:
        if node_id in members:
            raise ValueError(f"node {node_id} listed twice")
        signing = generate_signing_key()
        encryption = generate_encryption_key()
        tls = generate_tls_identity(base / node_id, node_id, [f"{node_id.lower()}.puente.test"])
        entry = node_entry(
            node_id, authority, kind, signing_key=signing, encryption_key=encryption, tls=tls
        )
        members[node_id] = TestNode(node_id, authority, kind, signing, encryption, tls, entry)
    operator_keys = [generate_signing_key() for _ in range(operators)]
    trust_doc = trust_root_document(FEDERATION, operator_keys, threshold)
    trust = TrustRoot.from_document(trust_doc)
    document = directory_document(
        FEDERATION,
        [m.entry for m in members.values()],
        version=version,
        now=now,
        validity=DIRECTORY_VALIDITY,
    )
    signed = sign_directory(document, operator_keys)
    directory = verify_directory(signed, trust, now=now)
    return TestFederation(
        now=now,
        nodes=members,
        operator_keys=tuple(operator_keys),
        trust_root_document=trust_doc,
        trust_root=trust,
        document=document,
        signed_directory=signed,
        directory=directory,
        tls_dir=base,
    )
