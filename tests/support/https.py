"""An aiohttp app served over real HTTPS on loopback, with a throw-away certificate.

Browser tests open the web interface the way an officer's browser will: over
TLS. The certificate is self-signed, made fresh for each server and never
written anywhere but a temporary folder that is removed once it is loaded;
the browser context accepts it with Playwright's ``ignore_https_errors``.

    async with serve_https(app) as base_url:  # "https://127.0.0.1:<port>"
        await page.goto(f"{base_url}/")
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"


def self_signed_server_context(
    common_name: str = "puente-browser-test.localhost",
) -> ssl.SSLContext:
    """A TLS server context with a new P-256 key and a self-signed certificate for loopback."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The ssl module loads a chain only from files: write both, load, and drop the folder.
    with tempfile.TemporaryDirectory(prefix="puente-tls-") as folder:
        cert_path = Path(folder) / "cert.pem"
        key_path = Path(folder) / "key.pem"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_path, key_path)
    return context


@asynccontextmanager
async def serve_https(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port over HTTPS; yield its base URL, no trailing slash."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK, 0, ssl_context=self_signed_server_context())
        await site.start()
        port = runner.addresses[0][1]
        yield f"https://{LOOPBACK}:{port}"
    finally:
        await runner.cleanup()
