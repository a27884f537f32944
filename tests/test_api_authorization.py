"""Authorization matrix: every role x every endpoint x own and other authority.

Two real nodes. At MX two caseworker authorities (mx-inm, mx-comar) each sent
a return notice, one to each of GT's two reception centres (gt-reception,
gt-reception-north). Each role's user belongs to the first authority of its
kind; "other" resources belong to the second. The expected answer of every
cell is stated in the table, not derived from the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.auditlog.checkpoints import issue_checkpoint
from node.core.config import AuthorityConfig
from node.delivery.outbox import queue_disclosure
from node.demo.local_federation import NodeSpec
from node.intake import inbox
from tests.support.api import api_client, running_api, user_token
from tests.support.nodes import DatabaseFactory, live_federation

MX = NodeSpec(
    "MX",
    "México (test)",
    (
        AuthorityConfig("mx-inm", "migration_authority", {"es": "INM"}),
        AuthorityConfig("mx-comar", "protection_agency", {"es": "COMAR"}),
    ),
)
GT = NodeSpec(
    "GT",
    "Guatemala (test)",
    (
        AuthorityConfig("gt-reception", "reception_centre", {"es": "Recepción"}),
        AuthorityConfig("gt-reception-north", "reception_centre", {"es": "Recepción Norte"}),
        AuthorityConfig("gt-consulate-tapachula", "consulate", {"es": "Consulado"}),
    ),
)
NOTICE = {
    "case_ref": "MX-TEST-2026-000100",
    "person": {"given_names": "Juana Prueba", "family_names": "Demo"},
    "arrival": {"date": "2026-12-05", "place_of_entry": "Aeropuerto de prueba", "means": "air"},
    "priority_flags": ["pregnant"],
}

ROLES = ("caseworker", "reception_officer", "auditor", "admin")
USERS: dict[str, dict[str, str | None]] = {
    "MX": {
        "caseworker": "mx-inm",
        "reception_officer": None,  # MX serves no reception centre in this test
        "auditor": "dpa-mx",
        "admin": "mx-operator",
    },
    "GT": {
        "caseworker": "gt-consulate-tapachula",
        "reception_officer": "gt-reception",
        "auditor": "dpa-gt",
        "admin": "gt-operator",
    },
}


@dataclass(frozen=True)
class Cell:
    node: str
    method: str
    path: str  # {own} / {other} are replaced by a resource of the user's / another authority
    allowed: tuple[str, ...]  # roles that get the success status
    success: int
    other_status: int | None = None  # status for the allowed role on another authority's resource
    body: dict[str, object] | None = None


MATRIX = (
    Cell("MX", "GET", "/api/v1/me", ROLES, 200),
    Cell("MX", "GET", "/api/v1/disclosures", ("caseworker",), 200),
    Cell("MX", "GET", "/api/v1/disclosures/{own}", ("caseworker",), 200, other_status=404),
    Cell("MX", "GET", "/api/v1/peers", ("caseworker", "admin"), 200),
    Cell("MX", "GET", "/api/v1/delivery/peers", ("caseworker", "admin"), 200),
    Cell("MX", "GET", "/api/v1/admin/users", ("admin",), 200),
    Cell("MX", "GET", "/api/v1/admin/keys", ("admin",), 200),
    Cell(
        "MX",
        "POST",
        "/api/v1/admin/users",
        ("admin",),
        201,
        body={"username": "new.user", "role": "auditor", "authority": "dpa-mx"},
    ),
    Cell("MX", "GET", "/api/v1/audit/checkpoint", ("auditor",), 200),
    Cell("MX", "GET", "/api/v1/audit/entries", ("auditor",), 200),
    Cell("GT", "GET", "/api/v1/audit/query?counterparty=MX", ("auditor",), 200),
    Cell("GT", "GET", "/api/v1/audit/witnessed", ("auditor",), 200),
    Cell("GT", "GET", "/api/v1/inbox", ("reception_officer",), 200),
    Cell("GT", "GET", "/api/v1/inbox/{own}", ("reception_officer",), 200, other_status=404),
    Cell(
        "GT",
        "POST",
        "/api/v1/inbox/{own}/acknowledge",
        ("reception_officer",),
        200,
        other_status=404,
    ),
    Cell(
        "GT",
        "POST",
        "/api/v1/inbox/{own}/outcome",
        ("reception_officer",),
        200,
        other_status=404,
        body={"outcome": "received_at_reception"},
    ),
)


async def test_authorization_matrix(tmp_path: Path, database_factory: DatabaseFactory) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        mx, gt = nodes["MX"], nodes["GT"]
        own_disclosure = await queue_disclosure(
            mx.ctx,
            sender_authority="mx-inm",
            recipient_node="GT",
            recipient_authority="gt-reception",
            doc_type="return_notice",
            body=NOTICE,
        )
        other_disclosure = await queue_disclosure(
            mx.ctx,
            sender_authority="mx-comar",
            recipient_node="GT",
            recipient_authority="gt-reception-north",
            doc_type="return_notice",
            body=NOTICE,
        )
        assert await mx.deliverer.run_once() == 2
        await issue_checkpoint(mx.ctx)  # as the node's schedule would
        tokens: dict[tuple[str, str], str] = {}
        for node_id, by_role in USERS.items():
            for role, authority in by_role.items():
                if authority is not None:
                    tokens[node_id, role] = await user_token(
                        nodes[node_id].ctx,
                        f"{role.replace('_', '.')}.{node_id.lower()}",
                        role,
                        authority,
                    )
        async with running_api(mx.ctx), running_api(gt.ctx):
            # Resolve inbox item ids through the API of each reception centre's own officer.
            async with api_client(gt.ctx, tokens["GT", "reception_officer"]) as officer:
                status, page = await officer.call("GET", "/api/v1/inbox")
                assert status == 200
                assert page["total"] == 1, "an officer sees only her own authority's items"
                own_item = page["items"][0]["id"]
            other_page = await inbox.list_inbox(gt.ctx, "gt-reception-north")
            other_item = other_page.items[0].id
            resources = {
                "MX": (own_disclosure.message_id, other_disclosure.message_id),
                "GT": (str(own_item), str(other_item)),
            }
            checked = 0
            for cell in MATRIX:
                node = nodes[cell.node]
                for role in ROLES:
                    token = tokens.get((cell.node, role))
                    if token is None:
                        continue
                    own, other = resources[cell.node]
                    targets = [("own", cell.path.replace("{own}", own))]
                    if "{own}" in cell.path:
                        targets.append(("other", cell.path.replace("{own}", other)))
                    for ownership, path in targets:
                        if role not in cell.allowed:
                            expected = 403
                        elif ownership == "other":
                            assert cell.other_status is not None
                            expected = cell.other_status
                        else:
                            expected = cell.success
                        body = cell.body
                        if body is not None and "username" in body:
                            body = {**body, "username": f"u{checked}"}
                        async with api_client(node.ctx, token) as client:
                            status, answer = await client.call(cell.method, path, json=body)
                        assert status == expected, (cell, role, ownership, answer)
                        if status >= 400:
                            assert answer["reason"] in {"role_forbidden", "not_found"}
                        checked += 1
            assert checked >= 40

            # Lists never leak another authority's rows.
            async with api_client(mx.ctx, tokens["MX", "caseworker"]) as caseworker:
                status, page = await caseworker.call("GET", "/api/v1/disclosures")
                assert status == 200
                assert [d["message_id"] for d in page["items"]] == [own_disclosure.message_id]
