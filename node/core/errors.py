"""Refusals by fault domain, each with a machine-readable reason code.

A caller branches on the exception type or on ``reason``, never on the message.
The same reason code appears in the RFC 9457 problem answer, in the audit log
and in the sender's view of a refused disclosure, so an operator can follow one
refusal across both nodes.
"""

from __future__ import annotations


class PuenteError(Exception):
    """Base of every refusal Puente raises on purpose."""

    reason: str = "error"
    http_status: int = 400

    def __init__(self, reason: str | None = None, detail: str = "") -> None:
        if reason is not None:
            self.reason = reason
        self.detail = detail or self.reason.replace("_", " ")
        super().__init__(f"{self.reason}: {self.detail}")


class ConfigError(PuenteError):
    """The node's configuration or data directory is unusable."""

    reason = "bad_config"


class KeyStoreError(PuenteError):
    """A key file is missing, malformed or has unsafe permissions."""

    reason = "bad_key_file"


class DirectoryError(PuenteError):
    """The federation directory is malformed or its signatures do not verify."""

    reason = "directory_invalid"
    http_status = 503


class EnvelopeError(PuenteError):
    """An envelope (JWE around a JWS) is refused. ``reason`` says why."""

    reason = "malformed_envelope"


class ReceiptError(PuenteError):
    """A receipt does not verify or does not match the disclosure it closes."""

    reason = "bad_receipt"


class SchemaError(PuenteError):
    """A document does not conform to its JSON Schema."""

    reason = "schema_invalid"
    http_status = 422


class PeerError(PuenteError):
    """The TLS peer is not the node it claims to be, or not a member at all."""

    reason = "unknown_peer"
    http_status = 403


# Refusal reasons that can pass once the recipient's copy of the directory or
# its clock catches up with the sender's (key rotation, a new certificate,
# clock skew): the sender retries them, and a batch stops at the first one so
# what follows is not stored ahead of it (node.delivery.peer_queue, node.intake.receive).
TRANSIENT_REFUSALS = frozenset({"unknown_peer", "unknown_sender_key", "not_yet_valid"})
