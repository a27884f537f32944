"""Mutual TLS pinned by the federation directory.

Each node's certificate is self-signed; trust comes only from its pin in the
signed directory. The server trusts exactly the pinned certificates of the
members, so a client without one is refused during the handshake. A client
trusts exactly the pinned certificates of the one peer it is calling, so a
hostname check adds nothing and is off.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterable

from node.trust.directory import Directory, MemberNode
from node.trust.keys import TlsIdentity, cert_pem_from_der, certificate_pin


def _base_context(purpose: int, identity: TlsIdentity) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(identity.cert_path, identity.key_path, password=identity.password)
    return context


def _trust(context: ssl.SSLContext, certificates: Iterable[bytes]) -> None:
    pem = "".join(cert_pem_from_der(der).decode("ascii") for der in certificates)
    if pem:
        context.load_verify_locations(cadata=pem)


def server_context(
    identity: TlsIdentity, directory: Directory, now: dt.datetime | None = None
) -> ssl.SSLContext:
    """Requires a client certificate pinned for some member node (and in force at ``now``)."""
    context = _base_context(ssl.PROTOCOL_TLS_SERVER, identity)
    context.verify_mode = ssl.CERT_REQUIRED
    _trust(context, directory.pinned_certificates(now))
    return context


def client_context(
    identity: TlsIdentity, peer: MemberNode, now: dt.datetime | None = None
) -> ssl.SSLContext:
    """Presents our certificate and accepts only the peer's pinned ones (in force at ``now``)."""
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT, identity)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    pins = set(peer.trusted_pins(now)) if now is not None else set(peer.tls_certificates)
    _trust(context, [der for pin, der in peer.tls_certificates.items() if pin in pins])
    return context


def peer_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The x5t#S256 pin of the certificate the TLS peer presented."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return certificate_pin(der) if der else None


def api_server_context(identity: TlsIdentity) -> ssl.SSLContext:
    """HTTPS for the local API: the node's certificate, no client certificate asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(identity.cert_path, identity.key_path, password=identity.password)
    return context
