"""A node's own key material: generation, files on disk, loading.

Keys are RFC 7517 JWK files. Private files are created with mode 0600 in a
0700 directory and refused on load when anyone but the owner can read them.
Each key's ``kid`` is its RFC 7638 thumbprint, so a key id can never name two
different keys. Several keys of one kind may live side by side (rotation keeps
the old ones to open what was sealed to them); the config names the active one.
With a passphrase, private keys are encrypted at rest (node.trust.at_rest).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc.jwk import OKPKey

from node.core.canonical import b64url
from node.core.errors import KeyStoreError
from node.trust.at_rest import Unlocker, is_wrapped, tls_key_password, unwrap_jwk, wrap_jwk

SIGNING_CURVE: Final = "Ed25519"
ENCRYPTION_CURVE: Final = "X25519"
TLS_CERT_DAYS = 397  # the longest life the CA/B forum allows; rotation comes well before


def generate_signing_key() -> OKPKey:
    """A fresh Ed25519 key whose kid is its RFC 7638 thumbprint."""
    return _with_thumbprint_kid(OKPKey.generate_key(SIGNING_CURVE), use="sig", alg="Ed25519")


def generate_encryption_key() -> OKPKey:
    """A fresh X25519 key for ECDH-ES key agreement (RFC 8037)."""
    return _with_thumbprint_kid(OKPKey.generate_key(ENCRYPTION_CURVE), use="enc", alg="ECDH-ES")


def _with_thumbprint_kid(key: OKPKey, *, use: str, alg: str) -> OKPKey:
    data = key.as_dict(private=True)
    data.update({"kid": key.thumbprint(), "use": use, "alg": alg})
    return OKPKey.import_key(data)


def public_jwk(key: OKPKey) -> dict[str, Any]:
    """The public JWK members, as published in the federation directory."""
    return dict(key.as_dict(private=False))


def import_public_jwk(data: dict[str, Any], *, curve: str) -> OKPKey:
    """Import a published JWK, refusing private members and the wrong curve."""
    if "d" in data:
        raise KeyStoreError("private_key_published", "a published JWK carries a private part")
    if data.get("kty") != "OKP" or data.get("crv") != curve or "kid" not in data:
        raise KeyStoreError("bad_public_key", f"expected an OKP {curve} JWK with a kid")
    try:
        return OKPKey.import_key(dict(data))
    except Exception as exc:  # joserfc raises several types for bad key bytes
        raise KeyStoreError("bad_public_key", str(exc)) from exc


def write_private_file(path: Path, data: bytes) -> None:
    """Write a secret file atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_private_file(path: Path) -> bytes:
    """Read a secret file, refusing one that group or others may read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeyStoreError("key_missing", f"no key file at {path}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(
            "key_file_permissions",
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); run chmod 600",
        )
    return path.read_bytes()


def save_jwk(directory: Path, key: OKPKey, *, passphrase: bytes | None = None) -> Path:
    """Store a private JWK as ``<dir>/<kid>.jwk`` (mode 0600), encrypted under a passphrase."""
    kid = key.kid
    if not kid:
        raise KeyStoreError("bad_key_file", "a key to store needs a kid")
    path = directory / f"{kid}.jwk"
    private = key.as_dict(private=True)
    if passphrase is not None:
        write_private_file(path, wrap_jwk(private, passphrase).encode("ascii"))
    else:
        write_private_file(path, json.dumps(private, indent=2).encode())
    return path


def load_jwk(path: Path, *, curve: str, unlocker: Unlocker | None = None) -> OKPKey:
    """Load a private JWK file written by :func:`save_jwk`, decrypting it if it is protected."""
    raw = read_private_file(path)
    if is_wrapped(raw):
        raw = json.dumps(
            unwrap_jwk(raw, (unlocker or Unlocker()).require(), where=str(path))
        ).encode()
    try:
        data = json.loads(raw)
        key = OKPKey.import_key(data)
    except KeyStoreError:
        raise
    except Exception as exc:
        raise KeyStoreError("bad_key_file", f"{path}: {exc}") from exc
    if key.as_dict(private=False).get("crv") != curve or not key.is_private:
        raise KeyStoreError("bad_key_file", f"{path}: expected a private {curve} key")
    return key


@dataclass(frozen=True)
class TlsIdentity:
    """A node's TLS certificate (PEM) and the path of its private key."""

    cert_pem: bytes
    key_path: Path
    cert_path: Path
    password: bytes | None = None  # for an encrypted PKCS#8 key (node.trust.at_rest)

    @property
    def protected(self) -> bool:
        return self.password is not None

    @property
    def cert_der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(
            serialization.Encoding.DER
        )

    @property
    def pin(self) -> str:
        """The RFC 7517 ``x5t#S256`` thumbprint: base64url SHA-256 of the DER certificate."""
        return certificate_pin(self.cert_der)


def certificate_pin(cert_der: bytes) -> str:
    """base64url(SHA-256(DER)), the pin the federation directory publishes."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(cert_der)
    return b64url(digest.finalize())


def generate_tls_identity(
    directory: Path, node_id: str, hosts: list[str], *, passphrase: bytes | None = None
) -> TlsIdentity:
    """A self-signed ECDSA P-256 certificate for mutual TLS between nodes.

    Self-signed is deliberate: trust comes from the pin in the signed federation
    directory, not from any certificate authority. With a passphrase the private
    key is PKCS#8 encrypted (node.trust.at_rest.tls_key_password).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    # A distinct name (and key identifiers) per certificate: during a rotation a peer
    # trusts two certificates of this node at once, and OpenSSL finds a self-signed
    # certificate's issuer by name, so the same name would make it try the wrong key.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"puente-node-{node_id}"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{serial:x}"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=TLS_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    pin = certificate_pin(cert.public_bytes(serialization.Encoding.DER))
    key_path = directory / f"{pin}.key"
    cert_path = directory / f"{pin}.crt"
    password = tls_key_password(passphrase, pin) if passphrase is not None else None
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password is not None
        else serialization.NoEncryption()
    )
    write_private_file(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ),
    )
    cert_path.write_bytes(cert_pem)
    return TlsIdentity(cert_pem=cert_pem, key_path=key_path, cert_path=cert_path, password=password)


def load_tls_identity(cert_path: Path, *, unlocker: Unlocker | None = None) -> TlsIdentity:
    """Load a certificate and check its private key file is owner-only (and opens)."""
    key_path = cert_path.with_suffix(".key")
    key_pem = read_private_file(key_path)
    try:
        cert_pem = cert_path.read_bytes()
        x509.load_pem_x509_certificate(cert_pem)
    except (OSError, ValueError) as exc:
        raise KeyStoreError("bad_certificate", f"{cert_path}: {exc}") from exc
    password = None
    if b"ENCRYPTED PRIVATE KEY" in key_pem:
        password = tls_key_password((unlocker or Unlocker()).require(), cert_path.stem)
        try:
            serialization.load_pem_private_key(key_pem, password=password)
        except (ValueError, TypeError) as exc:
            raise KeyStoreError(
                "bad_passphrase", f"{key_path}: the passphrase does not open this key"
            ) from exc
    return TlsIdentity(cert_pem=cert_pem, key_path=key_path, cert_path=cert_path, password=password)


def cert_der_from_pem(cert_pem: bytes) -> bytes:
    """DER bytes of a PEM certificate."""
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def cert_pem_from_der(cert_der: bytes) -> bytes:
    """PEM text of a DER certificate, as ``ssl`` wants trust anchors."""
    return x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
