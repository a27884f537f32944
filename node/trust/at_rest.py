"""Private keys at rest: encrypted under an operator passphrase, in standard formats.

* JWK files (signing, encryption, operator keys) are an RFC 7517 section 7
  encrypted JWK: a JWE compact serialization, ``alg`` PBES2-HS512+A256KW
  (RFC 7518 section 4.8) with a random 16-byte salt and 210,000 PBKDF2
  iterations, ``enc`` A256GCM, ``cty`` ``jwk+json``. Any JOSE library opens it
  with the passphrase.
* The TLS private key is PKCS#8 encrypted PEM (PBES2, AES-256-CBC), which
  ``ssl`` loads with a password callback. OpenSSL writes it with only 2,048
  PBKDF2 iterations, too few for a human passphrase, so its password is the
  passphrase stretched first: base64url(PBKDF2-HMAC-SHA512(passphrase,
  "puente-tls-key:" + pin, 210,000)) (docs/keys, keys/README.md).

The passphrase comes from a prompt, a file or ``PUENTE_KEY_PASSPHRASE``
(:func:`passphrase_source`) and is asked for only when an encrypted key is
actually met, through one :class:`Unlocker` per process.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from joserfc import jwe
from joserfc.jwk import OctKey

from node.core.canonical import b64url, b64url_decode
from node.core.errors import KeyStoreError

PASSPHRASE_ENV: Final = "PUENTE_KEY_PASSPHRASE"  # noqa: S105 - the variable's name
MIN_PASSPHRASE_CHARS: Final = 12
KEY_WRAP_ALG: Final = "PBES2-HS512+A256KW"
KEY_WRAP_ENC: Final = "A256GCM"
PBKDF2_ITERATIONS: Final = 210_000  # OWASP's figure for PBKDF2-HMAC-SHA512
MAX_PBKDF2_ITERATIONS: Final = 10_000_000  # a key file may not make the node hash for minutes
_REGISTRY = jwe.JWERegistry(algorithms=[KEY_WRAP_ALG, KEY_WRAP_ENC])
_TLS_SALT_PREFIX: Final = b"puente-tls-key:"

PassphraseSource = Callable[[], str | None]


class Unlocker:
    """Asks its source for the passphrase once, the first time a protected key needs it."""

    def __init__(self, source: PassphraseSource | None = None) -> None:
        self._source = source
        self._passphrase: bytes | None = None
        self._asked = False

    @classmethod
    def with_passphrase(cls, passphrase: str) -> Unlocker:
        return cls(lambda: passphrase)

    def passphrase(self) -> bytes | None:
        """The passphrase as UTF-8, or None when none is configured."""
        if not self._asked:
            self._asked = True
            text = self._source() if self._source else None
            self._passphrase = text.encode("utf-8") if text else None
        return self._passphrase

    def require(self) -> bytes:
        passphrase = self.passphrase()
        if passphrase is None:
            raise KeyStoreError(
                "key_locked",
                f"the private keys are encrypted: set {PASSPHRASE_ENV}, pass --passphrase-file, "
                "or run from a terminal to be asked",
            )
        return passphrase


NO_PASSPHRASE: Final = Unlocker()


def passphrase_source(
    passphrase_file: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    interactive: bool | None = None,
    prompt: str = "Passphrase for the node's private keys: ",
) -> PassphraseSource:
    """Where the passphrase comes from: a file, else the environment, else a prompt on a TTY."""
    env = os.environ if environ is None else environ

    def read() -> str | None:
        if passphrase_file is not None:
            try:
                text = passphrase_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise KeyStoreError("passphrase_unreadable", f"{passphrase_file}: {exc}") from exc
            return text.rstrip("\r\n") or None
        if env.get(PASSPHRASE_ENV):
            return env[PASSPHRASE_ENV]
        on_tty = sys.stdin.isatty() if interactive is None else interactive
        if on_tty:
            return getpass.getpass(prompt) or None
        return None

    return read


def check_new_passphrase(passphrase: bytes) -> None:
    """Refuse a passphrase too short to protect keys that decide a federation's trust."""
    if len(passphrase.decode("utf-8")) < MIN_PASSPHRASE_CHARS:
        raise KeyStoreError(
            "passphrase_too_short", f"use at least {MIN_PASSPHRASE_CHARS} characters"
        )


def wrap_jwk(private_jwk: Mapping[str, Any], passphrase: bytes) -> str:
    """An encrypted JWK (RFC 7517 section 7): PBES2-HS512+A256KW, A256GCM."""
    header = {"alg": KEY_WRAP_ALG, "enc": KEY_WRAP_ENC, "cty": "jwk+json", "p2c": PBKDF2_ITERATIONS}
    with warnings.catch_warnings():
        # joserfc warns that a passphrase is "short" for an AES key; PBES2 exists for that.
        warnings.simplefilter("ignore")
        return jwe.encrypt_compact(
            header,
            json.dumps(dict(private_jwk)).encode("utf-8"),
            OctKey.import_key(passphrase),
            registry=_REGISTRY,
        )


def is_wrapped(data: bytes) -> bool:
    """Is this key file an encrypted JWK (a JWE), rather than a plain JSON JWK?"""
    return not data.lstrip().startswith(b"{")


def unwrap_jwk(token: bytes, passphrase: bytes, *, where: str) -> dict[str, Any]:
    """Decrypt an encrypted JWK file; a wrong passphrase is ``bad_passphrase``."""
    text = token.decode("ascii", errors="replace").strip()
    parts = text.split(".")
    if len(parts) != 5:
        raise KeyStoreError("bad_key_file", f"{where}: neither a JWK nor an encrypted JWK")
    try:
        header = json.loads(b64url_decode(parts[0]))
    except (ValueError, RecursionError) as exc:
        raise KeyStoreError("bad_key_file", f"{where}: unreadable JWE header") from exc
    if (
        not isinstance(header, dict)
        or header.get("alg") != KEY_WRAP_ALG
        or header.get("enc") != KEY_WRAP_ENC
        or not isinstance(header.get("p2c"), int)
        or not 1000 <= header["p2c"] <= MAX_PBKDF2_ITERATIONS
    ):
        raise KeyStoreError("bad_key_file", f"{where}: not a PBES2-HS512+A256KW/A256GCM JWK")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            plaintext = jwe.decrypt_compact(
                text, OctKey.import_key(passphrase), registry=_REGISTRY
            ).plaintext
        except Exception as exc:  # a wrong passphrase fails the AES key unwrap
            raise KeyStoreError(
                "bad_passphrase", f"{where}: the passphrase does not open this key"
            ) from exc
    try:
        data = json.loads(plaintext or b"")
    except ValueError as exc:
        raise KeyStoreError("bad_key_file", f"{where}: the decrypted key is not JSON") from exc
    if not isinstance(data, dict):
        raise KeyStoreError("bad_key_file", f"{where}: the decrypted key is not a JWK")
    return data


def tls_key_password(passphrase: bytes, pin: str) -> bytes:
    """The PKCS#8 password for the TLS key with this certificate pin (see the module doc)."""
    derived = hashlib.pbkdf2_hmac(
        "sha512", passphrase, _TLS_SALT_PREFIX + pin.encode("ascii"), PBKDF2_ITERATIONS
    )
    return b64url(derived).encode("ascii")


def describe(path: Path) -> str:
    """ "encrypted" or "NOT ENCRYPTED", for status output."""
    try:
        data = path.read_bytes()
    except OSError:
        return "missing"
    if path.suffix == ".key":
        return "encrypted" if b"ENCRYPTED PRIVATE KEY" in data else "NOT ENCRYPTED"
    return "encrypted" if is_wrapped(data) else "NOT ENCRYPTED"
