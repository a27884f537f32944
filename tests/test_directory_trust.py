"""Directory trust and key rotation, table-driven like python-tuf's rotation tests.

Pure: no network, no database. An in-memory repository (``Repo``) plays the
federation operators: it builds directory documents for a small federation
and signs them with any operator keys; each case then asks node.trust.acceptance (or the
envelope and receipt checks) whether a node would accept the result, and
asserts the reason code. The cases cover: threshold met and not met,
operator-set rotation (old and new threshold both needed), expiry, rollback,
a freeze attack, signing, encryption and TLS key rotation with messages in
flight across the switch, a revoked key and a removed node.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from node.core.errors import DirectoryError, EnvelopeError, ReceiptError
from node.core.schemas import RETURN_NOTICE
from node.federation.key_rotation import select_active, with_rotated_key
from node.federation.refresher import directory_health
from node.trust.acceptance import TrustedDirectory, check_directory, verify_held, verify_initial
from node.trust.directory import Directory, TrustRoot, sign_directory, tls_entry
from node.trust.edit import (
    DraftError,
    add_node,
    remove_key,
    remove_node,
    revoke,
    set_operators,
)
from node.trust.keys import (
    generate_encryption_key,
    generate_signing_key,
    generate_tls_identity,
    public_jwk,
)
from node.trust.operator import directory_document, trust_root_document
from node.trust.validity import KeyValidity, newest_in_force, to_numeric_date
from node.wire.envelope import Message, Party, open_envelope, seal
from node.wire.receipts import issue_receipt, verify_receipt
from tests.support.pki import sample_return_notice

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
FEDERATION = "trust-test"


# --- an in-memory repository -----------------------------------------------------------------


@dataclass
class NodeKeys:
    signing: list[OKPKey]
    encryption: list[OKPKey]
    entry: dict[str, Any]


@dataclass
class Repo:
    """Operators A..F, three member nodes, and documents built on demand."""

    tmp: Path
    operators: dict[str, OKPKey] = field(default_factory=dict)
    nodes: dict[str, NodeKeys] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.operators = {name: generate_signing_key() for name in "ABCDEF"}
        for node_id, authority in (("MX", "mx-inm"), ("GT", "gt-reception"), ("HN", "hn-rc")):
            signing, encryption = generate_signing_key(), generate_encryption_key()
            tls = generate_tls_identity(self.tmp / node_id, node_id, ["127.0.0.1"])
            entry = {
                "id": node_id,
                "name": f"Test {node_id}",
                "endpoint": f"https://{node_id.lower()}.puente.test",
                "tls": [tls_entry(tls.cert_der)],
                "signing_keys": [public_jwk(signing)],
                "encryption_keys": [public_jwk(encryption)],
                "authorities": [
                    {"id": authority, "kind": "reception_centre", "names": {"es": authority}}
                ],
            }
            self.nodes[node_id] = NodeKeys([signing], [encryption], entry)

    def keys(self, names: str) -> list[OKPKey]:
        return [self.operators[n] for n in names]

    def trust_root(self, names: str = "ABC", threshold: int = 2) -> TrustRoot:
        return TrustRoot.from_document(trust_root_document(FEDERATION, self.keys(names), threshold))

    def document(
        self,
        version: int,
        *,
        operators: str | None = "ABC",
        threshold: int = 2,
        issued: dt.datetime = NOW,
        validity: dt.timedelta = 30 * DAY,
        federation: str = FEDERATION,
    ) -> dict[str, Any]:
        named = (
            {"threshold": threshold, "keys": [public_jwk(k) for k in self.keys(operators)]}
            if operators is not None
            else None
        )
        return directory_document(
            federation,
            [n.entry for n in self.nodes.values()],
            version=version,
            now=issued,
            validity=validity,
            operators=named,
        )

    def sign(self, document: Mapping[str, Any], signers: str) -> dict[str, Any]:
        return sign_directory(document, self.keys(signers))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("trust"))


def reason_of(call: Callable[[], object]) -> str | None:
    """The refusal's reason code, or None when the call succeeds."""
    try:
        call()
    except (DirectoryError, EnvelopeError, ReceiptError) as refusal:
        return refusal.reason
    return None


# --- 1. thresholds and operator-set rotation -------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A node holding ``held`` (None: only the trust root) is offered ``offered``."""

    held: Callable[[Repo], dict[str, Any] | None]
    offered: Callable[[Repo], dict[str, Any]]
    expected: str | None
    now: dt.datetime = NOW


def v1(repo: Repo) -> dict[str, Any]:
    return repo.sign(repo.document(1), "AB")


def rotated_v2(repo: Repo) -> dict[str, Any]:
    """v2 hands the federation from operators A, B, C (2 of 3) to D, E, F (2 of 3)."""
    return repo.document(2, operators="DEF", threshold=2)


THRESHOLD_CASES = {
    # First install, trusted through the trust root (A, B, C; 2 needed).
    "bootstrap-threshold-met": Case(lambda r: None, v1, None),
    "bootstrap-all-three": Case(lambda r: None, lambda r: r.sign(r.document(1), "ABC"), None),
    "bootstrap-one-short": Case(
        lambda r: None, lambda r: r.sign(r.document(1), "A"), "directory_under_threshold"
    ),
    "bootstrap-same-key-twice": Case(
        lambda r: None, lambda r: r.sign(r.document(1), "AA"), "directory_under_threshold"
    ),
    "bootstrap-strangers": Case(
        lambda r: None, lambda r: r.sign(r.document(1), "DE"), "directory_under_threshold"
    ),
    "bootstrap-one-trusted-one-stranger": Case(
        lambda r: None, lambda r: r.sign(r.document(1), "AD"), "directory_under_threshold"
    ),
    # A first directory naming other operators than the trust root needs both.
    "bootstrap-names-new-operators-signed-by-old-only": Case(
        lambda r: None,
        lambda r: r.sign(r.document(1, operators="DEF"), "AB"),
        "directory_under_threshold",
    ),
    "bootstrap-names-new-operators-signed-by-both": Case(
        lambda r: None, lambda r: r.sign(r.document(1, operators="DEF"), "ABDE"), None
    ),
    # Updates with an unchanged operator set.
    "update-threshold-met": Case(v1, lambda r: r.sign(r.document(2), "BC"), None),
    "update-threshold-not-met": Case(
        v1, lambda r: r.sign(r.document(2), "C"), "directory_under_threshold"
    ),
    # Operator-set rotation: v2 must satisfy the old (ABC) and the new (DEF) threshold.
    "rotation-old-and-new-thresholds": Case(v1, lambda r: r.sign(rotated_v2(r), "ABDE"), None),
    "rotation-old-only": Case(
        v1, lambda r: r.sign(rotated_v2(r), "ABC"), "directory_under_threshold"
    ),
    "rotation-new-only": Case(
        v1, lambda r: r.sign(rotated_v2(r), "DEF"), "directory_under_threshold"
    ),
    "rotation-old-full-new-short": Case(
        v1, lambda r: r.sign(rotated_v2(r), "ABCD"), "directory_under_threshold"
    ),
    "rotation-old-short-new-full": Case(
        v1, lambda r: r.sign(rotated_v2(r), "ADEF"), "directory_under_threshold"
    ),
    # After the rotation, only the new operators sign.
    "after-rotation-new-operators-suffice": Case(
        lambda r: r.sign(rotated_v2(r), "ABDE"),
        lambda r: r.sign(r.document(3, operators="DEF"), "EF"),
        None,
    ),
    "after-rotation-old-operators-no-longer-count": Case(
        lambda r: r.sign(rotated_v2(r), "ABDE"),
        lambda r: r.sign(r.document(3, operators="DEF"), "ABC"),
        "directory_under_threshold",
    ),
    # Raising the threshold over the same keys: the new threshold applies already.
    "threshold-raised-needs-the-new-threshold": Case(
        v1,
        lambda r: r.sign(r.document(2, threshold=3), "AB"),
        "directory_under_threshold",
    ),
    "threshold-raised-met": Case(v1, lambda r: r.sign(r.document(2, threshold=3), "ABC"), None),
    # Expiry, rollback and version reuse.
    "expired": Case(
        v1,
        lambda r: r.sign(r.document(2, issued=NOW - 31 * DAY), "AB"),
        "directory_expired",
    ),
    "expires-exactly-now": Case(
        v1, lambda r: r.sign(r.document(2, issued=NOW - 30 * DAY), "AB"), "directory_expired"
    ),
    "expired-held-is-replaced-by-a-newer-valid-one": Case(
        v1, lambda r: r.sign(r.document(2, issued=NOW + 40 * DAY), "AB"), None, NOW + 45 * DAY
    ),
    "rollback-to-a-lower-version": Case(
        lambda r: r.sign(r.document(3), "AB"),
        lambda r: r.sign(r.document(2), "AB"),
        "directory_rollback",
    ),
    "same-version-other-content": Case(
        v1,
        lambda r: r.sign(r.document(1, issued=NOW - HOUR), "AB"),
        "directory_version_conflict",
    ),
    "same-version-same-document": Case(v1, lambda r: r.sign(r.document(1), "BC"), None),
    "another-federation": Case(
        v1,
        lambda r: r.sign(r.document(2, federation="other-federation"), "AB"),
        "wrong_federation",
    ),
    "not-a-jws": Case(v1, lambda r: {"payload": 7, "signatures": []}, "directory_malformed"),
}


@pytest.mark.parametrize("case", THRESHOLD_CASES.values(), ids=THRESHOLD_CASES.keys())
def test_directory_rules(repo: Repo, case: Case) -> None:
    trust = repo.trust_root()
    held_signed = case.held(repo)
    offered = case.offered(repo)

    def check() -> Directory:
        if held_signed is None:
            return verify_initial(offered, trust, now=case.now)
        held = verify_held(held_signed, trust, now=case.now)
        return check_directory(offered, trust_root=trust, previous=held, now=case.now)

    assert reason_of(check) == case.expected


def test_trusted_directory_replaces_only_forward(repo: Repo) -> None:
    trust = repo.trust_root()
    state = TrustedDirectory(trust, verify_initial(v1(repo), trust, now=NOW))
    v2 = repo.sign(repo.document(2), "AB")
    assert state.update(v2, now=NOW) is not None and state.current.version == 2
    assert state.update(v2, now=NOW) is None  # the same directory again: nothing to do
    with pytest.raises(DirectoryError) as refused:
        state.update(v1(repo), now=NOW)
    assert refused.value.reason == "directory_rollback"
    assert state.current.version == 2  # a refusal never changes what is held


def test_a_chain_walks_across_an_operator_rotation(repo: Repo) -> None:
    """A node that missed v2 (the hand-over) needs it to accept v3, signed by the new set only."""
    trust = repo.trust_root()
    v2 = repo.sign(rotated_v2(repo), "ABDE")
    v3 = repo.sign(repo.document(3, operators="DEF"), "DE")

    alone = TrustedDirectory(trust, verify_initial(v1(repo), trust, now=NOW))
    accepted, refused = alone.update_from([v3], now=NOW)
    assert accepted == [] and [r.reason for r in refused] == ["directory_under_threshold"]

    chained = TrustedDirectory(trust, verify_initial(v1(repo), trust, now=NOW))
    accepted, refused = chained.update_from([v3, v2, v1(repo)], now=NOW)  # any order
    assert [d.version for d in accepted] == [2, 3]
    assert chained.current.version == 3 and refused == []


# --- 2. a freeze attack ----------------------------------------------------------------------


def test_freeze_attack(repo: Repo) -> None:
    """An attacker replays an old, validly signed directory to hide a newer one.

    A node that has the newer one refuses the old (rollback). A node that never
    got it keeps its old directory only until that expires: it is warned well
    before, and then refuses traffic rather than trust a stale member list.
    """
    trust = repo.trust_root()
    old = repo.sign(repo.document(1), "AB")
    newer = repo.sign(repo.document(2, issued=NOW + 5 * DAY), "AB")

    updated = TrustedDirectory(trust, verify_initial(old, trust, now=NOW))
    updated.update(newer, now=NOW + 5 * DAY)
    assert reason_of(lambda: updated.update(old, now=NOW + 6 * DAY)) == "directory_rollback"

    frozen = TrustedDirectory(trust, verify_initial(old, trust, now=NOW))
    assert frozen.update(old, now=NOW + 6 * DAY) is None  # the replay changes nothing...
    statuses = {
        days: directory_health(frozen.current, NOW + days * DAY, warn_days=7, critical_days=1)
        for days in (6, 23, 29.5, 30)
    }
    assert [s.status for s in statuses.values()] == ["ok", "warning", "critical", "expired"]
    # ... and once it has expired, replaying it again is refused like any expired directory.
    fresh_node = reason_of(lambda: verify_initial(old, trust, now=NOW + 30 * DAY))
    assert fresh_node == "directory_expired"


def test_an_expired_directory_stops_traffic(repo: Repo) -> None:
    trust = repo.trust_root()
    directory = verify_initial(v1(repo), trust, now=NOW)
    sender, recipient = repo.nodes["MX"], repo.nodes["GT"]
    message = notice("MX", "GT", issued=NOW + 30 * DAY - HOUR)
    envelope = seal(message, signing_key=sender.signing[0], recipient_key=recipient.encryption[0])
    opened = open_as(repo, "GT", envelope.encode(), directory, NOW + 30 * DAY - HOUR)
    assert opened.message.message_id == message.message_id
    refusal = reason_of(
        lambda: open_as(repo, "GT", envelope.encode(), directory, NOW + 30 * DAY + HOUR)
    )
    assert refusal == "directory_expired"


# --- 3. key rotation with messages in flight -------------------------------------------------


def notice(sender: str, recipient: str, *, issued: dt.datetime) -> Message:
    authorities = {"MX": "mx-inm", "GT": "gt-reception", "HN": "hn-rc"}
    return Message(
        message_id=f"00000000-0000-4000-8000-{int(issued.timestamp()):012d}",
        sender=Party(sender, authorities[sender]),
        recipient=Party(recipient, authorities[recipient]),
        doc_type="return_notice",
        schema=RETURN_NOTICE,
        issued_at=int(issued.timestamp()),
        expires_at=int((issued + 2 * DAY).timestamp()),
        body=sample_return_notice(),
    )


def open_as(
    repo: Repo, node_id: str, envelope: bytes, directory: Directory, now: dt.datetime
) -> Any:
    keys = {str(k.kid): k for k in repo.nodes[node_id].encryption}
    return open_envelope(
        envelope, own_node=node_id, own_encryption_keys=keys, directory=directory, now=now
    )


SWITCH = NOW + DAY  # the new keys' nbf
OVERLAP = 7 * DAY  # the old keys' exp is SWITCH + OVERLAP


@dataclass
class Rotated:
    """GT rotated all its keys: published in v2 from SWITCH, old ones valid until SWITCH+OVERLAP."""

    directory: Directory
    old_signing: OKPKey
    new_signing: OKPKey
    old_encryption: OKPKey
    new_encryption: OKPKey
    old_pin: str
    new_pin: str


@pytest.fixture(scope="module")
def rotated(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Rotated:
    gt = repo.nodes["GT"]
    new_signing, new_encryption = generate_signing_key(), generate_encryption_key()
    new_tls = generate_tls_identity(tmp_path_factory.mktemp("gt-new"), "GT", ["127.0.0.1"])
    entry = copy.deepcopy(gt.entry)
    for kind, member in (
        ("signing", public_jwk(new_signing)),
        ("encryption", public_jwk(new_encryption)),
        ("tls", tls_entry(new_tls.cert_der)),
    ):
        entry = with_rotated_key(entry, kind, member, not_before=SWITCH, overlap=OVERLAP)
    document = add_node(repo.document(2), entry, replace=True)
    trust = repo.trust_root()
    held = verify_initial(v1(repo), trust, now=NOW)
    directory = check_directory(repo.sign(document, "AB"), trust_root=trust, previous=held, now=NOW)
    gt.encryption.append(new_encryption)  # GT holds both private keys from now on
    return Rotated(
        directory=directory,
        old_signing=gt.signing[0],
        new_signing=new_signing,
        old_encryption=gt.encryption[0],
        new_encryption=new_encryption,
        old_pin=gt.entry["tls"][0]["x5t#S256"],
        new_pin=new_tls.pin,
    )


@dataclass(frozen=True)
class Flight:
    """GT signs a message at ``signed`` with ``key``; MX opens it at ``opened``."""

    key: str  # "old" or "new"
    signed: dt.datetime
    opened: dt.datetime
    expected: str | None


SIGNING_FLIGHTS = {
    "old-key-before-the-switch": Flight("old", SWITCH - HOUR, SWITCH - HOUR, None),
    "old-key-signed-before-opened-after-the-switch": Flight(
        "old", SWITCH - HOUR, SWITCH + HOUR, None
    ),
    "old-key-in-the-overlap": Flight("old", SWITCH + DAY, SWITCH + DAY, None),
    "old-key-signed-in-the-overlap-opened-after-it": Flight(
        "old", SWITCH + OVERLAP - HOUR, SWITCH + OVERLAP + HOUR, None
    ),
    "old-key-after-its-exp": Flight(
        "old", SWITCH + OVERLAP + HOUR, SWITCH + OVERLAP + HOUR, "signing_key_expired"
    ),
    "new-key-before-its-nbf": Flight(
        "new", SWITCH - HOUR, SWITCH - HOUR, "signing_key_not_yet_valid"
    ),
    "new-key-within-clock-skew-of-nbf": Flight(
        "new", SWITCH - dt.timedelta(minutes=4), SWITCH, None
    ),
    "new-key-after-the-switch": Flight("new", SWITCH + HOUR, SWITCH + HOUR, None),
}


@pytest.mark.parametrize("flight", SIGNING_FLIGHTS.values(), ids=SIGNING_FLIGHTS.keys())
def test_signing_key_rotation_in_flight(repo: Repo, rotated: Rotated, flight: Flight) -> None:
    key = rotated.old_signing if flight.key == "old" else rotated.new_signing
    message = notice("GT", "MX", issued=flight.signed)
    envelope = seal(message, signing_key=key, recipient_key=repo.nodes["MX"].encryption[0]).encode()
    assert (
        reason_of(lambda: open_as(repo, "MX", envelope, rotated.directory, flight.opened))
        == flight.expected
    )


def test_the_node_switches_its_signing_key_at_nbf(rotated: Rotated) -> None:
    gt = rotated.directory.node("GT")
    assert gt is not None
    held = {str(rotated.old_signing.kid), str(rotated.new_signing.kid)}
    assert select_active(gt, "signing", held, SWITCH - HOUR) == rotated.old_signing.kid
    assert select_active(gt, "signing", held, SWITCH) == rotated.new_signing.kid
    # Published but not held (the private key is elsewhere): not chosen.
    assert select_active(gt, "signing", {str(rotated.old_signing.kid)}, SWITCH) == (
        rotated.old_signing.kid
    )


def test_receipts_across_a_signing_key_switch(repo: Repo, rotated: Rotated) -> None:
    message = notice("MX", "GT", issued=SWITCH - HOUR)
    for key, received, expected in (
        (rotated.old_signing, SWITCH - HOUR, None),
        (rotated.new_signing, SWITCH + HOUR, None),
        (rotated.new_signing, SWITCH - HOUR, "receipt_key_not_yet_valid"),
        (rotated.old_signing, SWITCH + OVERLAP + HOUR, "receipt_key_expired"),
    ):
        token = issue_receipt(
            message, envelope_sha256="0" * 64, received_at=received, signing_key=key
        )
        verdict = reason_of(
            lambda token=token: verify_receipt(  # type: ignore[misc]
                token,
                directory=rotated.directory,
                expected_message_id=message.message_id,
                expected_recipient="GT",
                expected_envelope_sha256="0" * 64,
            )
        )
        assert verdict == expected


def test_encryption_key_rotation_in_flight(repo: Repo, rotated: Rotated) -> None:
    gt = rotated.directory.node("GT")
    assert gt is not None
    # Senders seal to the old key until the new one's nbf, then to the new one.
    assert gt.encryption_key_at(SWITCH - HOUR).kid == rotated.old_encryption.kid
    assert gt.encryption_key_at(SWITCH).kid == rotated.new_encryption.kid
    mx_signing = repo.nodes["MX"].signing[0]
    before = notice("MX", "GT", issued=SWITCH - HOUR)
    after = notice("MX", "GT", issued=SWITCH + HOUR)
    # Sealed just before the switch, delivered after it: in flight across the switch.
    in_flight = seal(
        before, signing_key=mx_signing, recipient_key=gt.encryption_key_at(SWITCH - HOUR)
    )
    fresh = seal(after, signing_key=mx_signing, recipient_key=gt.encryption_key_at(SWITCH + HOUR))
    # GT opens both after the switch: it keeps the old private key through the overlap.
    for envelope, kid in (
        (in_flight, rotated.old_encryption.kid),
        (fresh, rotated.new_encryption.kid),
    ):
        opened = open_as(repo, "GT", envelope.encode(), rotated.directory, SWITCH + 2 * HOUR)
        assert opened.encryption_kid == kid
    # Had GT dropped the old key at the switch, the envelope in flight would be lost.
    assert (
        reason_of(
            lambda: open_envelope(
                in_flight.encode(),
                own_node="GT",
                own_encryption_keys={str(rotated.new_encryption.kid): rotated.new_encryption},
                directory=rotated.directory,
                now=SWITCH + 2 * HOUR,
            )
        )
        == "unknown_recipient_key"
    )


def test_tls_certificate_rotation(rotated: Rotated) -> None:
    gt = rotated.directory.node("GT")
    assert gt is not None
    held = {rotated.old_pin, rotated.new_pin}
    # GT presents the old certificate until nbf, the new one after.
    assert select_active(gt, "tls", held, SWITCH - HOUR) == rotated.old_pin
    assert select_active(gt, "tls", held, SWITCH + HOUR) == rotated.new_pin
    # Peers trust both from publication (so a switch never fails a handshake)...
    for moment in (NOW, SWITCH - HOUR, SWITCH + HOUR):
        assert set(gt.trusted_pins(moment)) == held
        assert rotated.directory.node_by_pin(rotated.new_pin, at=moment) == gt
    # ... and the old one no longer once it expires.
    after = SWITCH + OVERLAP + HOUR
    assert gt.trusted_pins(after) == [rotated.new_pin]
    assert rotated.directory.node_by_pin(rotated.old_pin, at=after) is None
    assert len(rotated.directory.pinned_certificates(after)) == 3  # MX, HN, GT's new one


# --- 4. revocation ---------------------------------------------------------------------------


REVOKED_AT = NOW + 2 * DAY


@pytest.mark.parametrize(
    ("reason", "signed", "seen", "expected"),
    [
        pytest.param("superseded", REVOKED_AT - HOUR, REVOKED_AT - HOUR, None, id="before"),
        pytest.param(
            "superseded", REVOKED_AT - HOUR, REVOKED_AT + HOUR, None, id="signed-before-seen-after"
        ),
        pytest.param(
            "superseded", REVOKED_AT, REVOKED_AT, "signing_key_revoked", id="at-revocation"
        ),
        pytest.param(
            "superseded", REVOKED_AT + HOUR, REVOKED_AT + HOUR, "signing_key_revoked", id="after"
        ),
        # A thief can backdate iat: after a compromise, what counts is when it arrives.
        pytest.param(
            "keyCompromise",
            REVOKED_AT - HOUR,
            REVOKED_AT + HOUR,
            "signing_key_revoked",
            id="compromise-backdated",
        ),
        pytest.param(
            "keyCompromise", REVOKED_AT - 2 * HOUR, REVOKED_AT - HOUR, None, id="compromise-before"
        ),
    ],
)
def test_revoked_signing_key(
    repo: Repo, reason: str, signed: dt.datetime, seen: dt.datetime, expected: str | None
) -> None:
    trust = repo.trust_root()
    mx = repo.nodes["MX"]
    kid = str(mx.signing[0].kid)
    document = revoke(repo.document(2), "MX", kid, at=REVOKED_AT, reason=reason)
    directory = check_directory(
        repo.sign(document, "AB"),
        trust_root=trust,
        previous=verify_initial(v1(repo), trust, now=NOW),
        now=NOW,
    )
    message = notice("MX", "GT", issued=signed)
    envelope = seal(
        message, signing_key=mx.signing[0], recipient_key=repo.nodes["GT"].encryption[0]
    ).encode()
    assert reason_of(lambda: open_as(repo, "GT", envelope, directory, seen)) == expected


def test_revoked_receipt_key(repo: Repo) -> None:
    trust = repo.trust_root()
    gt_key = repo.nodes["GT"].signing[0]
    document = revoke(repo.document(2), "GT", str(gt_key.kid), at=REVOKED_AT, reason="superseded")
    directory = verify_initial(repo.sign(document, "AB"), trust, now=NOW)
    message = notice("MX", "GT", issued=REVOKED_AT - HOUR)

    def verify(received: dt.datetime) -> None:
        token = issue_receipt(
            message, envelope_sha256="1" * 64, received_at=received, signing_key=gt_key
        )
        verify_receipt(
            token,
            directory=directory,
            expected_message_id=message.message_id,
            expected_recipient="GT",
            expected_envelope_sha256="1" * 64,
        )

    assert reason_of(lambda: verify(REVOKED_AT - HOUR)) is None
    assert reason_of(lambda: verify(REVOKED_AT + HOUR)) == "receipt_key_revoked"


def test_revoked_tls_pin_is_no_longer_trusted(repo: Repo) -> None:
    trust = repo.trust_root()
    pin = repo.nodes["HN"].entry["tls"][0]["x5t#S256"]
    document = revoke(repo.document(2), "HN", pin, at=REVOKED_AT, reason="keyCompromise")
    directory = verify_initial(repo.sign(document, "AB"), trust, now=NOW)
    assert directory.node_by_pin(pin, at=REVOKED_AT - HOUR) is not None
    assert directory.node_by_pin(pin, at=REVOKED_AT) is None
    assert len(directory.pinned_certificates(REVOKED_AT - HOUR)) == 3
    assert len(directory.pinned_certificates(REVOKED_AT)) == 2


def test_revoked_encryption_key_is_never_sealed_to(repo: Repo) -> None:
    trust = repo.trust_root()
    kid = str(repo.nodes["GT"].encryption[0].kid)
    document = revoke(repo.document(2), "GT", kid, at=REVOKED_AT, reason="keyCompromise")
    directory = verify_initial(repo.sign(document, "AB"), trust, now=NOW)
    gt = directory.node("GT")
    assert gt is not None
    assert gt.encryption_key_at(REVOKED_AT - HOUR).kid == kid
    with pytest.raises(DirectoryError) as refused:
        gt.encryption_key_at(REVOKED_AT)
    assert refused.value.reason == "no_encryption_key_in_force"


# --- 5. a removed node -----------------------------------------------------------------------


def test_a_removed_node_can_neither_send_nor_receive(repo: Repo) -> None:
    trust = repo.trust_root()
    held = verify_initial(v1(repo), trust, now=NOW)
    without_hn = check_directory(
        repo.sign(remove_node(repo.document(2), "HN"), "AB"),
        trust_root=trust,
        previous=held,
        now=NOW,
    )
    hn = repo.nodes["HN"]
    pin = hn.entry["tls"][0]["x5t#S256"]
    # Its certificate is no longer a trust anchor for mutual TLS, nor names a member...
    assert without_hn.node_by_pin(pin) is None
    assert len(without_hn.pinned_certificates()) == 2
    # ... nobody seals to it, and what it signs is refused.
    assert without_hn.node("HN") is None
    envelope = seal(
        notice("HN", "GT", issued=NOW),
        signing_key=hn.signing[0],
        recipient_key=repo.nodes["GT"].encryption[0],
    ).encode()
    assert reason_of(lambda: open_as(repo, "GT", envelope, without_hn, NOW)) == "unknown_sender_key"
    # And HN itself, holding this directory, is no longer a party to anything.
    to_hn = seal(
        notice("GT", "HN", issued=NOW),
        signing_key=repo.nodes["GT"].signing[0],
        recipient_key=hn.encryption[0],
    ).encode()
    assert reason_of(lambda: open_as(repo, "HN", to_hn, without_hn, NOW)) == "unknown_authority"


# --- key validity, the pure rule -------------------------------------------------------------


def test_newest_in_force_prefers_the_latest_nbf_then_the_last_listed() -> None:
    always = KeyValidity()
    later = KeyValidity(not_before=SWITCH)
    ended = KeyValidity(expires=NOW)
    candidates: Sequence[tuple[str, KeyValidity]] = [("a", always), ("b", later), ("c", always)]
    assert newest_in_force(candidates, NOW) == "c"
    assert newest_in_force(candidates, SWITCH) == "b"
    assert newest_in_force([("x", ended)], NOW) is None


def test_validity_members_round_trip() -> None:
    validity = KeyValidity(
        not_before=NOW, expires=SWITCH, revoked_at=REVOKED_AT, revocation_reason="superseded"
    )
    members = validity.as_members()
    assert members == {
        "nbf": to_numeric_date(NOW),
        "exp": to_numeric_date(SWITCH),
        "revoked": {"revoked_at": to_numeric_date(REVOKED_AT), "reason": "superseded"},
    }
    assert KeyValidity.from_member(members) == validity
    with pytest.raises(ValueError, match="later than nbf"):
        KeyValidity.from_member({"nbf": 10, "exp": 10})


def test_an_empty_validity_window_is_refused(repo: Repo) -> None:
    document = repo.document(1)
    gt = next(n for n in document["nodes"] if n["id"] == "GT")
    gt["signing_keys"][0].update({"nbf": 2_000_000_000, "exp": 1_000_000_000})
    assert reason_of(
        lambda: verify_initial(repo.sign(document, "AB"), repo.trust_root(), now=NOW)
    ) == ("directory_invalid")


def test_a_kid_must_be_the_key_thumbprint(repo: Repo) -> None:
    document = repo.document(1)
    gt = next(n for n in document["nodes"] if n["id"] == "GT")
    gt["signing_keys"][0]["kid"] = repo.nodes["MX"].entry["signing_keys"][0]["kid"]
    assert reason_of(
        lambda: verify_initial(repo.sign(document, "AB"), repo.trust_root(), now=NOW)
    ) == ("directory_invalid")


def test_operator_edits_keep_the_document_valid(repo: Repo) -> None:
    document = repo.document(1)
    kid = str(repo.nodes["GT"].signing[0].kid)
    with pytest.raises(DraftError) as refused:
        remove_key(document, "GT", kid)  # GT's only signing key
    assert refused.value.reason == "last_key"
    rotated = set_operators(document, [public_jwk(k) for k in repo.keys("DE")], 2)
    assert rotated["operators"]["threshold"] == 2 and document["operators"]["threshold"] == 2
    assert [k["kid"] for k in rotated["operators"]["keys"]] == [k.kid for k in repo.keys("DE")]
