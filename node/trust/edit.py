"""Operator edits on a directory draft, and what changed between two versions.

A *draft* is the plain directory document (docs/directory.md) that operators
edit before signing. Every function here is pure: it takes a document and
returns a new one (the input is never modified), checked against the schema
and the model, or raises :class:`DraftError` with a reason code. The
``puente federation`` commands read and write the files.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from node.core.clock import rfc3339
from node.core.errors import DirectoryError, PuenteError
from node.trust.directory import decode_payload, parse_directory, tls_entry
from node.trust.validity import REVOCATION_REASONS, KeyValidity, to_numeric_date

_KEY_LISTS = ("signing_keys", "encryption_keys", "tls")


class DraftError(PuenteError):
    """An operator edit that cannot be made, with a reason code."""

    reason = "draft_invalid"


def as_document(value: Mapping[str, Any]) -> dict[str, Any]:
    """The document of a draft or of a signed directory (whose signatures an edit voids)."""
    if "payload" in value and "signatures" in value:
        document = decode_payload(value)
        if not isinstance(document, dict):
            raise DraftError("draft_invalid", "the signed payload is not a directory document")
        return document
    return copy.deepcopy(dict(value))


def checked(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document if it is a valid directory (schema and model), else DraftError."""
    try:
        parse_directory(document, {})
    except DirectoryError as exc:
        raise DraftError(exc.reason, exc.detail) from exc
    return dict(document)


def new_directory(
    federation: str,
    *,
    operator_keys: Sequence[Mapping[str, Any]],
    threshold: int,
    entries: Iterable[Mapping[str, Any]],
    version: int,
    now: dt.datetime,
    validity: dt.timedelta,
) -> dict[str, Any]:
    """A fresh draft naming its operator set and listing the given node entries."""
    nodes = sorted((copy.deepcopy(dict(e)) for e in entries), key=lambda e: str(e["id"]))
    ids = [n["id"] for n in nodes]
    if len(set(ids)) != len(ids):
        raise DraftError("node_exists", "a node entry is given twice")
    return checked(
        {
            "federation": federation,
            "version": version,
            "issued_at": rfc3339(now),
            "expires_at": rfc3339(now + validity),
            "operators": _operators(operator_keys, threshold),
            "nodes": nodes,
        }
    )


def add_node(
    document: Mapping[str, Any], entry: Mapping[str, Any], *, replace: bool = False
) -> dict[str, Any]:
    """Add a node entry (from ``puente init`` or ``keys rotate``); ``replace`` updates one."""
    doc = copy.deepcopy(dict(document))
    others = [n for n in doc["nodes"] if n["id"] != entry.get("id")]
    if len(others) != len(doc["nodes"]) and not replace:
        raise DraftError("node_exists", f"node {entry.get('id')} is listed; use --replace")
    if len(others) == len(doc["nodes"]) and replace:
        raise DraftError("unknown_node", f"node {entry.get('id')} is not listed")
    doc["nodes"] = sorted([*others, copy.deepcopy(dict(entry))], key=lambda e: str(e["id"]))
    return checked(doc)


def remove_node(document: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    """Take a node out of the federation: it can then neither send nor receive."""
    doc = copy.deepcopy(dict(document))
    _node(doc, node_id)
    doc["nodes"] = [n for n in doc["nodes"] if n["id"] != node_id]
    return checked(doc)


def add_authority(
    document: Mapping[str, Any], node_id: str, authority: Mapping[str, Any]
) -> dict[str, Any]:
    """Add (or replace, by id) an authority a node serves."""
    doc = copy.deepcopy(dict(document))
    node = _node(doc, node_id)
    node["authorities"] = [a for a in node["authorities"] if a["id"] != authority["id"]]
    node["authorities"].append(dict(authority))
    return checked(doc)


def set_endpoint(document: Mapping[str, Any], node_id: str, url: str) -> dict[str, Any]:
    doc = copy.deepcopy(dict(document))
    _node(doc, node_id)["endpoint"] = url
    return checked(doc)


def set_witness_quorum(document: Mapping[str, Any], quorum: int) -> dict[str, Any]:
    """The witness policy: how many other members must cosign each member's checkpoints."""
    doc = copy.deepcopy(dict(document))
    doc["witness_policy"] = {"quorum": quorum}
    return checked(doc)


def add_tls(
    document: Mapping[str, Any],
    node_id: str,
    cert_der: bytes,
    *,
    not_before: dt.datetime | None = None,
) -> dict[str, Any]:
    """Pin another TLS certificate for a node (published before the node uses it)."""
    doc = copy.deepcopy(dict(document))
    node = _node(doc, node_id)
    pinned = tls_entry(cert_der)
    if any(t["x5t#S256"] == pinned["x5t#S256"] for t in node["tls"]):
        raise DraftError("pin_exists", f"node {node_id} already pins this certificate")
    if not_before is not None:
        pinned["nbf"] = to_numeric_date(not_before)
    node["tls"].append(pinned)
    return checked(doc)


def remove_key(document: Mapping[str, Any], node_id: str, key_id: str) -> dict[str, Any]:
    """Drop a key or pin from the current directory (history keeps it for old evidence)."""
    doc = copy.deepcopy(dict(document))
    node = _node(doc, node_id)
    list_name, _ = _find_key(node, key_id)
    node[list_name] = [m for m in node[list_name] if _member_id(m) != key_id]
    if not node[list_name]:
        raise DraftError("last_key", f"node {node_id} would have no {list_name} left")
    return checked(doc)


def set_validity(
    document: Mapping[str, Any],
    node_id: str,
    key_id: str,
    *,
    not_before: dt.datetime | None = None,
    expires: dt.datetime | None = None,
) -> dict[str, Any]:
    """Set when a key or pin starts (``nbf``) or stops (``exp``) being valid."""
    doc = copy.deepcopy(dict(document))
    _, member = _find_key(_node(doc, node_id), key_id)
    if not_before is not None:
        member["nbf"] = to_numeric_date(not_before)
    if expires is not None:
        member["exp"] = to_numeric_date(expires)
    return checked(doc)


def revoke(
    document: Mapping[str, Any],
    node_id: str,
    key_id: str,
    *,
    at: dt.datetime,
    reason: str = "unspecified",
) -> dict[str, Any]:
    """Mark a key or pin revoked from ``at``: anything it signed from then on is refused."""
    if reason not in REVOCATION_REASONS:
        raise DraftError("bad_revocation_reason", f"use one of {', '.join(REVOCATION_REASONS)}")
    doc = copy.deepcopy(dict(document))
    _, member = _find_key(_node(doc, node_id), key_id)
    member["revoked"] = {"revoked_at": to_numeric_date(at), "reason": reason}
    return checked(doc)


def set_operators(
    document: Mapping[str, Any], operator_keys: Sequence[Mapping[str, Any]], threshold: int
) -> dict[str, Any]:
    """Name a new operator set. The next version needs both the old and the new threshold."""
    doc = copy.deepcopy(dict(document))
    doc["operators"] = _operators(operator_keys, threshold)
    return checked(doc)


def bump(
    document: Mapping[str, Any],
    *,
    now: dt.datetime,
    validity: dt.timedelta,
    version: int | None = None,
) -> dict[str, Any]:
    """The next version: a higher version number, issued now, expiring after ``validity``."""
    doc = copy.deepcopy(dict(document))
    new_version = doc["version"] + 1 if version is None else version
    if new_version <= doc["version"]:
        raise DraftError("version_not_increasing", f"{new_version} is not above {doc['version']}")
    doc["version"] = new_version
    doc["issued_at"] = rfc3339(now)
    doc["expires_at"] = rfc3339(now + validity)
    return checked(doc)


# --- diff ------------------------------------------------------------------------------------


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed from ``old`` to ``new``, one human-readable line per change."""
    lines: list[str] = []
    for name in ("federation", "version", "issued_at", "expires_at", "witness_policy"):
        if old.get(name) != new.get(name):
            lines.append(f"{name}: {old.get(name)} -> {new.get(name)}")
    lines.extend(_diff_operators(old.get("operators"), new.get("operators")))
    old_nodes = {n["id"]: n for n in old.get("nodes", [])}
    new_nodes = {n["id"]: n for n in new.get("nodes", [])}
    for node_id in sorted(new_nodes.keys() - old_nodes.keys()):
        lines.append(f"+ node {node_id} ({new_nodes[node_id]['name']})")
    for node_id in sorted(old_nodes.keys() - new_nodes.keys()):
        lines.append(f"- node {node_id} ({old_nodes[node_id]['name']})")
    for node_id in sorted(old_nodes.keys() & new_nodes.keys()):
        lines.extend(
            f"~ node {node_id}: {change}"
            for change in _diff_node(old_nodes[node_id], new_nodes[node_id])
        )
    return lines


def _diff_operators(old: Any, new: Any) -> list[str]:
    if old == new:
        return []
    if old is None or new is None:
        return [f"operators: {_describe_operators(old)} -> {_describe_operators(new)}"]
    lines = []
    if old["threshold"] != new["threshold"]:
        lines.append(f"operators: threshold {old['threshold']} -> {new['threshold']}")
    old_kids = {k["kid"] for k in old["keys"]}
    new_kids = {k["kid"] for k in new["keys"]}
    lines.extend(f"operators: + key {kid}" for kid in sorted(new_kids - old_kids))
    lines.extend(f"operators: - key {kid}" for kid in sorted(old_kids - new_kids))
    return lines


def _describe_operators(value: Any) -> str:
    if value is None:
        return "the trust root's"
    return f"{value['threshold']} of {len(value['keys'])}"


def _diff_node(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = []
    for name in ("name", "endpoint"):
        if old[name] != new[name]:
            changes.append(f"{name} {old[name]} -> {new[name]}")
    labels = {"signing_keys": "signing key", "encryption_keys": "encryption key", "tls": "tls pin"}
    for list_name in _KEY_LISTS:
        before = {_member_id(m): m for m in old[list_name]}
        after = {_member_id(m): m for m in new[list_name]}
        label = labels[list_name]
        for key_id in after.keys() - before.keys():
            validity = _describe_validity(after[key_id])
            changes.append(f"+ {label} {key_id}" + (f" ({validity})" if validity else ""))
        for key_id in before.keys() - after.keys():
            changes.append(f"- {label} {key_id}")
        for key_id in before.keys() & after.keys():
            was, now = _describe_validity(before[key_id]), _describe_validity(after[key_id])
            if was != now:
                changes.append(
                    f"{label} {key_id}: {was or 'always valid'} -> {now or 'always valid'}"
                )
    old_auth = {a["id"]: a for a in old["authorities"]}
    new_auth = {a["id"]: a for a in new["authorities"]}
    for auth_id in sorted(new_auth.keys() - old_auth.keys()):
        changes.append(f"+ authority {auth_id} ({new_auth[auth_id]['kind']})")
    for auth_id in sorted(old_auth.keys() - new_auth.keys()):
        changes.append(f"- authority {auth_id}")
    for auth_id in sorted(old_auth.keys() & new_auth.keys()):
        if old_auth[auth_id] != new_auth[auth_id]:
            changes.append(f"authority {auth_id} changed")
    others = (set(old) | set(new)) - {"name", "endpoint", "authorities", "id", *_KEY_LISTS}
    changes.extend(f"{name} changed" for name in sorted(others) if old.get(name) != new.get(name))
    return sorted(changes)


def _describe_validity(member: Mapping[str, Any]) -> str:
    validity = KeyValidity.from_member(member)
    parts = []
    if validity.not_before:
        parts.append(f"from {rfc3339(validity.not_before)}")
    if validity.expires:
        parts.append(f"until {rfc3339(validity.expires)}")
    if validity.revoked_at:
        parts.append(f"REVOKED at {rfc3339(validity.revoked_at)} ({validity.revocation_reason})")
    return ", ".join(parts)


# --- helpers ---------------------------------------------------------------------------------


def _operators(operator_keys: Sequence[Mapping[str, Any]], threshold: int) -> dict[str, Any]:
    keys = [dict(k) for k in operator_keys]
    if any("d" in k for k in keys):
        raise DraftError("private_key_published", "an operator key carries its private part")
    if len({k.get("kid") for k in keys}) != len(keys):
        raise DraftError("operator_key_repeated", "an operator key is given twice")
    if not 1 <= threshold <= len(keys):
        raise DraftError("bad_threshold", f"threshold {threshold} with {len(keys)} operator key(s)")
    return {"threshold": threshold, "keys": keys}


def _node(document: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    for node in document["nodes"]:
        if node["id"] == node_id:
            return dict(node) if not isinstance(node, dict) else node
    raise DraftError("unknown_node", f"node {node_id} is not listed")


def _member_id(member: Mapping[str, Any]) -> str:
    return str(member.get("kid") or member["x5t#S256"])


def _find_key(node: Mapping[str, Any], key_id: str) -> tuple[str, dict[str, Any]]:
    for list_name in _KEY_LISTS:
        for member in node[list_name]:
            if _member_id(member) == key_id:
                return list_name, member
    raise DraftError("unknown_key", f"node {node['id']} has no key or pin {key_id}")
