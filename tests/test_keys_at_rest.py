"""Private keys at rest: encrypted under a passphrase, in formats other tools open.

JWK files are RFC 7517 encrypted JWKs (JWE, PBES2-HS512+A256KW, A256GCM),
checked here with jwcrypto, an implementation independent of ours; the TLS key
is PKCS#8 encrypted PEM, which ``ssl`` loads with a password. A node with
protected keys opens only with its passphrase (from a file, the environment or
a prompt) and serves mutual TLS as before; an unprotected one says so loudly.
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwa as jwc_jwa
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk
from sqlalchemy import select

from node.commands.cli import main
from node.core.clock import utcnow
from node.core.errors import KeyStoreError
from node.delivery.outbox import queue_disclosure
from node.demo.local_federation import build_local_federation
from node.federation.app import create_app, start_site
from node.federation.app_keys import DELIVERER
from node.storage.context import open_node
from node.storage.models import Disclosure
from node.trust.at_rest import (
    KEY_WRAP_ALG,
    PASSPHRASE_ENV,
    Unlocker,
    passphrase_source,
    tls_key_password,
)
from node.trust.keys import (
    SIGNING_CURVE,
    generate_signing_key,
    generate_tls_identity,
    load_jwk,
    load_tls_identity,
    save_jwk,
)
from tests.support.nodes import GT, MX, DatabaseFactory

PASSPHRASE = "correct horse battery staple"


def test_an_encrypted_jwk_opens_with_an_independent_jose_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_signing_key()
    path = save_jwk(tmp_path, key, passphrase=PASSPHRASE.encode())
    token = path.read_text()
    assert '"d"' not in token and token.count(".") == 4  # a JWE compact serialization
    header = json.loads(jwc_jwk.base64url_decode(token.split(".")[0]))
    assert header["alg"] == KEY_WRAP_ALG and header["enc"] == "A256GCM"
    assert header["cty"] == "jwk+json" and header["p2c"] >= 210_000

    # jwcrypto refuses more than 16,384 PBKDF2 iterations by default (a guard against
    # hostile tokens); a key file is ours, so raise it, as one would with OpenSSL's -iter.
    monkeypatch.setattr(jwc_jwa, "default_max_pbkdf2_iterations", 1_000_000)
    other = jwc_jwe.JWE()
    other.deserialize(token, key=jwc_jwk.JWK.from_password(PASSPHRASE))
    assert json.loads(other.payload) == key.as_dict(private=True)
    assert (
        load_jwk(path, curve=SIGNING_CURVE, unlocker=Unlocker.with_passphrase(PASSPHRASE)).kid
        == key.kid
    )


@pytest.mark.parametrize(
    ("unlocker", "reason"),
    [
        pytest.param(Unlocker(), "key_locked", id="no-passphrase"),
        pytest.param(Unlocker.with_passphrase("wrong horse battery"), "bad_passphrase", id="wrong"),
    ],
)
def test_a_protected_jwk_refuses_without_its_passphrase(
    tmp_path: Path, unlocker: Unlocker, reason: str
) -> None:
    path = save_jwk(tmp_path, generate_signing_key(), passphrase=PASSPHRASE.encode())
    with pytest.raises(KeyStoreError) as refused:
        load_jwk(path, curve=SIGNING_CURVE, unlocker=unlocker)
    assert refused.value.reason == reason


def test_a_tampered_key_file_is_a_clear_refusal(tmp_path: Path) -> None:
    path = save_jwk(tmp_path, generate_signing_key(), passphrase=PASSPHRASE.encode())
    head, rest = path.read_text().split(".", 1)
    header = json.loads(jwc_jwk.base64url_decode(head))
    header["p2c"] = 10**12  # would make the node hash for days
    forged = jwc_jwk.base64url_encode(json.dumps(header).encode()) + "." + rest
    path.write_text(forged)
    with pytest.raises(KeyStoreError) as refused:
        load_jwk(path, curve=SIGNING_CURVE, unlocker=Unlocker.with_passphrase(PASSPHRASE))
    assert refused.value.reason == "bad_key_file"


def test_the_tls_key_is_encrypted_pkcs8_that_ssl_loads(tmp_path: Path) -> None:
    identity = generate_tls_identity(tmp_path, "GT", ["127.0.0.1"], passphrase=PASSPHRASE.encode())
    pem = identity.key_path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # no password, no key
        serialization.load_pem_private_key(pem, password=None)
    password = tls_key_password(PASSPHRASE.encode(), identity.pin)
    serialization.load_pem_private_key(pem, password=password)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(identity.cert_path, identity.key_path, password=password)

    loaded = load_tls_identity(identity.cert_path, unlocker=Unlocker.with_passphrase(PASSPHRASE))
    assert loaded.protected and loaded.password == password
    with pytest.raises(KeyStoreError) as refused:
        load_tls_identity(
            identity.cert_path, unlocker=Unlocker.with_passphrase("not the one at all")
        )
    assert refused.value.reason == "bad_passphrase"


def test_the_passphrase_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    assert passphrase_source(secret, environ={}, interactive=False)() == PASSPHRASE
    from_env = passphrase_source(None, environ={PASSPHRASE_ENV: "from the environment"})
    assert from_env() == "from the environment"
    assert passphrase_source(None, environ={}, interactive=False)() is None
    with pytest.raises(KeyStoreError) as refused:
        passphrase_source(tmp_path / "missing", environ={})()
    assert refused.value.reason == "passphrase_unreadable"


def init_args(data_dir: Path, node_id: str, *extra: str) -> list[str]:
    return [
        "init",
        "--dir",
        str(data_dir),
        "--id",
        node_id,
        "--name",
        f"{node_id} test",
        "--port",
        "18999",
        "--authority",
        f"{node_id.lower()}-test:reception_centre:Prueba",
        *extra,
    ]


def test_init_protects_keys_or_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    assert main(init_args(tmp_path / "mx", "MX", "--passphrase-file", str(secret))) == 0
    out = capsys.readouterr().out
    assert "private keys encrypted at rest" in out and "NOT encrypted" not in out
    for path in (tmp_path / "mx" / "keys").rglob("*"):
        if path.suffix == ".jwk" and path.parent.name in {
            "signing",
            "encryption",
            "audit-log",
            "witness",
        }:
            assert not path.read_text().lstrip().startswith("{"), path
        if path.suffix == ".key" and path.parent.name == "tls":
            assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()

    assert main(init_args(tmp_path / "gt", "GT")) == 0
    assert "the private keys are NOT encrypted at rest" in capsys.readouterr().out

    short = tmp_path / "short"
    short.write_text("too short")
    assert main(init_args(tmp_path / "hn", "HN", "--passphrase-file", str(short))) == 2
    assert "passphrase_too_short" in capsys.readouterr().err


async def test_a_protected_node_opens_only_with_its_passphrase_and_serves_mutual_tls(
    tmp_path: Path,
    database_factory: DatabaseFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    urls = {"MX": await database_factory("mx"), "GT": await database_factory("gt")}
    dirs = build_local_federation(
        tmp_path, (MX, GT), federation="test-federation", now=utcnow(), database_urls=urls
    )
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    with caplog.at_level(logging.WARNING, logger="node.storage.context"):
        unprotected = open_node(dirs["GT"])
    assert not unprotected.keys.protected
    assert "private_keys_unprotected" in caplog.text
    await unprotected.close()
    for data_dir in dirs.values():
        assert (
            main(["keys", "protect", "--dir", str(data_dir), "--passphrase-file", str(secret)]) == 0
        )
    # signing, encryption, TLS, and the audit log's checkpoint and witness keys
    assert "5 key file(s) encrypted" in capsys.readouterr().out

    with pytest.raises(KeyStoreError) as locked:
        open_node(dirs["MX"])
    assert locked.value.reason == "key_locked"
    with pytest.raises(KeyStoreError) as wrong:
        open_node(dirs["MX"], unlocker=Unlocker.with_passphrase("a wrong passphrase"))
    assert wrong.value.reason == "bad_passphrase"

    # From the environment, as `puente serve` reads it when no file is given.
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    contexts = {node_id: open_node(d) for node_id, d in dirs.items()}
    runners = []
    try:
        assert all(ctx.keys.protected for ctx in contexts.values())
        apps = {node_id: create_app(ctx, deliver=False) for node_id, ctx in contexts.items()}
        for node_id, app in apps.items():
            runners.append(await start_site(app, contexts[node_id]))
        mx = contexts["MX"]
        row = await queue_disclosure(
            mx,
            sender_authority="mx-inm",
            recipient_node="GT",
            recipient_authority="gt-reception",
            doc_type="return_notice",
            body={
                "case_ref": "MX-TEST-2026-000099",
                "person": {"given_names": "Ana Prueba", "family_names": "Ficticia"},
                "arrival": {
                    "date": "2026-12-01",
                    "place_of_entry": "Aeropuerto de prueba",
                    "means": "air",
                },
                "immediate_needs": ["medical_care"],
            },
        )
        await apps["MX"][DELIVERER].run_once()
        async with mx.sessions() as session:
            stored = (
                await session.execute(
                    select(Disclosure).where(Disclosure.message_id == row.message_id)
                )
            ).scalar_one()
        assert stored.state == "delivered"
        await apps["MX"][DELIVERER].close()
    finally:
        for runner in runners:
            await runner.cleanup()
        for ctx in contexts.values():
            await ctx.close()
