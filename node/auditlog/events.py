"""Every event the audit log records, with what it means, and what a query may filter on.

One list, so that an auditor's filter can be checked (a misspelt event is a
400 naming these, never an empty answer) and docs/audit-log.md can list
them; a test holds every event the node appends to this list.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

EVENTS: Final = MappingProxyType(
    {
        # The sender's side of a disclosure.
        "disclosure.queued": "a summary left a caseworker's hands: sealed and queued for delivery",
        "disclosure.delivered": "the recipient's node signed a receipt for it",
        "disclosure.refused": "the recipient's node refused it (reason)",
        "disclosure.refused_locally": "this node refused to send it (reason)",
        "disclosure.expired": "it was not delivered before it expired",
        "disclosure.withdrawn": "it was stopped before delivery because consent was withdrawn",
        # The recipient's side.
        "envelope.received": "a message from a peer was accepted and a receipt signed",
        "envelope.duplicate": "a message already held arrived again",
        "envelope.refused": "a message from a peer was refused (reason)",
        "summary.viewed": "a person read a received summary",
        "summary.erased": "a received summary was erased (its data key destroyed)",
        "retention.purged": "a received summary outlived its retention and was erased",
        "erasure.confirmed": "a recipient's signed erasure receipt arrived",
        "arrival.acknowledged": "a reception officer acknowledged an arrival",
        "arrival.outcome_recorded": "a reception officer recorded what became of an arrival",
        # Cases and consent at the origin.
        "case.created": "a case was recorded",
        "case.interviewed": "interview answers were added to a case",
        "case.addendum": "an addendum was added to a case",
        "case.route_recorded": "a step of the critical route was recorded on a case",
        "case.erased": "a case was crypto-shredded: its data key destroyed (reason)",
        "consent.given": "a consent was recorded",
        "consent.narrowed": "a consent was narrowed",
        "consent.withdrawn": "a consent was withdrawn",
        "consent.lapsed": "a consent reached the end of its validity",
        # The node itself.
        "directory.updated": "a newer federation directory was accepted",
        "keys.activated": "a rotated key came into use",
        "user.created": "a local user was created",
        "token.issued": "an access token was issued",
        "token.revoked": "an access token was revoked",
        "api.refused": "an authenticated request to the local API was refused (reason)",
        "api.unauthenticated": "refusals before authentication, counted per source and minute",
        "witness.refused": "a peer's checkpoint was refused for witnessing (reason)",
        "witness.fork_detected": "a peer showed two histories of its log",
        "backup.created": "an encrypted, signed backup of this node was written",
        "backup.restored": "this node was restored from a backup",
    }
)


def unknown_event(name: str) -> str | None:
    """None if ``name`` is an event of :data:`EVENTS`, else a sentence listing the known ones."""
    if name in EVENTS:
        return None
    return f"event {name!r} is not one the log records; known events: {', '.join(EVENTS)}"
