"""schemathesis against the served OpenAPI document of a running ``puente serve``.

Every operation, with generated valid and invalid input, for each role's
token: no 5xx, and every response conforms to the document (status code,
content type, schema, headers).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from openapi_spec_validator import validate

from node.api import users
from node.api.openapi import openapi_document
from node.core.config import CONFIG_FILE, AuthorityConfig, load_config
from node.demo.local_federation import NodeSpec, build_local_federation
from node.demo.run import start_node, wait_for_port
from node.storage.context import open_node
from node.storage.migrate import upgrade_to_head
from tests.support.nodes import MX

GT_WITH_CONSULATE = NodeSpec(
    "GT",
    "Guatemala (test)",
    (
        AuthorityConfig("gt-reception", "reception_centre", {"es": "Recepción"}),
        AuthorityConfig("gt-consulate", "consulate", {"es": "Consulado"}),
    ),
)
ROLE_USERS = (
    ("consul", "caseworker", "gt-consulate"),
    ("officer", "reception_officer", "gt-reception"),
    ("auditor", "auditor", "dpa-gt"),
    ("admin", "admin", "gt-operator"),
)


def test_openapi_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    validate(document)


async def _tokens(data_dir: Path) -> dict[str, str]:
    ctx = open_node(data_dir)
    try:
        await upgrade_to_head(ctx.engine)
        tokens = {}
        for username, role, authority in ROLE_USERS:
            await users.create_user(ctx, username=username, role=role, authority=authority)
            tokens[role], _ = await users.issue_token(ctx, username, lifetime=dt.timedelta(hours=2))
        return tokens
    finally:
        await ctx.close()


@pytest.fixture
def served_node(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    dirs = build_local_federation(
        tmp_path, (MX, GT_WITH_CONSULATE), federation="test-federation", now=dt.datetime.now(dt.UTC)
    )
    gt_dir = dirs["GT"]
    config_path = gt_dir / CONFIG_FILE
    raw = tomllib.loads(config_path.read_text())
    raw["api"]["rate_per_second"] = 10_000.0  # let the fuzzer through; limits are tested elsewhere
    raw["api"]["burst"] = 10_000
    raw["api"]["preauth_rate_per_second"] = 10_000.0
    raw["api"]["preauth_burst"] = 10_000
    config_path.write_text(tomli_w.dumps(raw))
    tokens = asyncio.run(_tokens(gt_dir))
    process = start_node(gt_dir)
    try:
        wait_for_port(load_config(gt_dir).api.port, process)
        yield gt_dir, tokens
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


@pytest.mark.timeout(1200)
def test_schemathesis_finds_no_server_error_and_no_nonconformance(
    served_node: tuple[Path, dict[str, str]],
) -> None:
    gt_dir, tokens = served_node
    config = load_config(gt_dir)
    cert = next((gt_dir / "keys" / "tls").glob("*.crt"))
    schema_url = f"https://127.0.0.1:{config.api.port}/api/v1/openapi.json"
    for role, token in tokens.items():
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                schema_url,
                "--tls-verify",
                str(cert),
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_schema_conformance,response_headers_conformance",
                "--max-examples",
                "12",
                "--seed",
                "20261123",
                "--workers",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
        assert result.returncode == 0, f"{role}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
