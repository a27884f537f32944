"""Usernames: one normal form (NFKC, case-folded), no control characters, no look-alikes.

Before: a username had to match ``^[a-z0-9][a-z0-9._-]{1,62}$``, so
``josé.pérez`` was refused, while ``$`` in the pattern let a name end in a
newline (``ana.officer\\n``) — a second user that prints like the first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.api import users
from tests.support.api import api_client, running_api, user_token
from tests.support.nodes import GT, MX, DatabaseFactory, live_federation
from tests.support.processes import puente

REFUSED = [
    "ana.officer\n",  # a trailing newline
    "ana\nofficer",
    "ana\tofficer",
    "ana\x00officer",
    "ana\x7fofficer",  # DEL
    "ana\u202eofficer",  # a right-to-left override
    "ana\u200bofficer",  # a zero-width space
    "ana officer",
    "\u0430na.officer",  # a Cyrillic a among Latin letters
    ".ana",
    "-ana",
    "a",
    "ana@example",
    "x" * 64,
]
SAME_USER = ["josé.pérez", "JOSÉ.PÉREZ", "Jose\u0301.Pe\u0301rez", "ｊｏｓé.ｐéｒｅｚ"]


@pytest.mark.parametrize("name", REFUSED)
def test_a_username_with_controls_spaces_or_mixed_scripts_is_refused(name: str) -> None:
    with pytest.raises(users.UserError) as refused:
        users.normalize_username(name)
    assert refused.value.reason == "bad_username"


def test_look_alikes_collapse_to_one_form() -> None:
    assert {users.normalize_username(name) for name in SAME_USER} == {"josé.pérez"}
    assert users.normalize_username("Ana.Officer") == "ana.officer"
    assert users.normalize_username("straße") == "strasse"
    assert users.normalize_username("ﬁona") == "fiona"  # a ligature
    assert users.normalize_username("名前") == "名前"  # letters of one script


async def test_cli_and_api_apply_the_same_rules(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    async with live_federation(tmp_path, database_factory, (MX, GT)) as nodes:
        ctx = nodes["GT"].ctx
        data_dir = str(ctx.config.data_dir)
        add = ("users", "add", "--dir", data_dir, "--role", "auditor", "--authority", "dpa-gt")

        code, _, err = await puente(*add, "--username", "ana.officer\n")
        assert code == 2 and "\npuente: bad_username:" in "\n" + err, err
        code, out, err = await puente(*add, "--username", "JOSÉ.PÉREZ")
        assert code == 0, err
        assert "user josé.pérez (auditor, dpa-gt) created" in out
        code, _, err = await puente(*add, "--username", "ｊｏｓé.pérez")
        assert code == 2 and "\npuente: user_exists:" in "\n" + err, err
        code, out, err = await puente(
            "users", "token", "--dir", data_dir, "--username", "Jose\u0301.Pe\u0301rez"
        )
        assert code == 0 and out.startswith("pnt_"), err

        async with running_api(ctx):
            admin = await user_token(ctx, "ops", "admin", "gt-operator")
            async with api_client(ctx, admin) as client:
                for name in ("ana.officer\n", "\u0430na.officer", "ana\u202eofficer"):
                    status, problem = await client.call(
                        "POST",
                        "/api/v1/admin/users",
                        json={"username": name, "role": "auditor", "authority": "dpa-gt"},
                    )
                    assert (status, problem["reason"]) == (422, "bad_username"), name
                status, created = await client.call(
                    "POST",
                    "/api/v1/admin/users",
                    json={"username": "María.López", "role": "auditor", "authority": "dpa-gt"},
                )
                assert (status, created["username"]) == (201, "maría.lópez")
                status, problem = await client.call(
                    "POST",
                    "/api/v1/admin/users",
                    json={"username": "MARÍA.LÓPEZ", "role": "auditor", "authority": "dpa-gt"},
                )
                assert (status, problem["reason"]) == (422, "user_exists")
                status, token = await client.call(
                    "POST", "/api/v1/admin/users/MAR%C3%8DA.L%C3%93PEZ/tokens", json={}
                )
                assert status == 201 and token["token"].startswith("pnt_")
            async with api_client(ctx, token["token"]) as maria:
                status, me = await maria.call("GET", "/api/v1/me")
                assert (status, me["username"]) == (200, "maría.lópez")
