"""The ``puente`` command: node set-up, operator steps and refusals, as a user types them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node.commands.cli import main
from node.core.config import load_config
from node.core.errors import KeyStoreError
from node.storage.context import load_keys


def puente(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.commands", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def init_node_dir(data_dir: Path, node_id: str = "MX", port: int = 18443) -> None:
    result = puente(
        "init",
        "--dir",
        data_dir,
        "--id",
        node_id,
        "--name",
        f"{node_id} test",
        "--port",
        str(port),
        "--authority",
        f"{node_id.lower()}-inm:migration_authority:Test",
    )
    assert result.returncode == 0, result.stderr


def test_init_writes_owner_only_private_keys(tmp_path: Path) -> None:
    data_dir = tmp_path / "mx"
    init_node_dir(data_dir)
    private = [
        *data_dir.glob("keys/signing/*.jwk"),
        *data_dir.glob("keys/encryption/*.jwk"),
        *data_dir.glob("keys/tls/*.key"),
    ]
    assert len(private) == 3
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((data_dir / "keys" / "signing").stat().st_mode) == 0o700
    signing = json.loads(next(data_dir.glob("keys/signing/*.jwk")).read_text())
    assert signing["crv"] == "Ed25519" and "d" in signing
    entry = json.loads((data_dir / "public" / "node-entry.json").read_text())
    assert all("d" not in jwk for jwk in entry["signing_keys"] + entry["encryption_keys"])
    assert entry["signing_keys"][0]["kid"] == signing["kid"]
    assert entry["tls"][0]["x5t#S256"] == load_config(data_dir).tls_pin


def test_init_refuses_to_overwrite_a_node(tmp_path: Path) -> None:
    data_dir = tmp_path / "mx"
    init_node_dir(data_dir)
    again = puente(
        "init",
        "--dir",
        data_dir,
        "--id",
        "MX",
        "--name",
        "x",
        "--authority",
        "mx-inm:migration_authority:Test",
    )
    assert again.returncode == 2
    assert "already_initialised" in again.stderr
    assert "Traceback" not in again.stderr


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "mx"
    init_node_dir(data_dir)
    key_file = next(data_dir.glob("keys/signing/*.jwk"))
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyStoreError) as refused:
        load_keys(load_config(data_dir))
    assert refused.value.reason == "key_file_permissions"


def test_bad_node_id_is_a_clear_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "init",
            "--dir",
            str(tmp_path / "x"),
            "--id",
            "Mexico",
            "--name",
            "x",
            "--authority",
            "mx-inm:migration_authority:Test",
        ]
    )
    assert code == 2
    assert "bad_node_id" in capsys.readouterr().err


def test_operator_workflow_and_send_refusals(tmp_path: Path) -> None:
    """Init two nodes, build and sign a directory, install it, then refuse bad sends."""
    mx, gt = tmp_path / "mx", tmp_path / "gt"
    init_node_dir(mx, "MX", 18444)
    assert (
        puente(
            "init",
            "--dir",
            gt,
            "--id",
            "GT",
            "--name",
            "GT test",
            "--port",
            "18445",
            "--authority",
            "gt-reception:reception_centre:Recepción",
        ).returncode
        == 0
    )
    ops = tmp_path / "operator"
    assert puente("federation", "keygen", "--out", ops).returncode == 0
    key = next(ops.glob("*.jwk"))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    root, directory = tmp_path / "trust-root.json", tmp_path / "directory.json"
    assert (
        puente(
            "federation", "trust-root", "--federation", "test-fed", "--key", key, "--out", root
        ).returncode
        == 0
    )
    created = puente(
        "federation",
        "create",
        "--federation",
        "test-fed",
        "--entry",
        mx / "public" / "node-entry.json",
        "--entry",
        gt / "public" / "node-entry.json",
        "--key",
        key,
        "--out",
        directory,
    )
    assert created.returncode == 0, created.stderr
    verified = puente("federation", "verify", "--trust-root", root, "--directory", directory)
    assert verified.returncode == 0 and "GT, MX" in verified.stdout
    for node_dir in (mx, gt):
        installed = puente(
            "federation",
            "install",
            "--dir",
            node_dir,
            "--trust-root",
            root,
            "--directory",
            directory,
        )
        assert installed.returncode == 0, installed.stderr

    # A tampered directory is refused at install time, with a reason code.
    signed = json.loads(directory.read_text())
    signed["signatures"][0]["signature"] = "A" + signed["signatures"][0]["signature"][1:]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(signed))
    refused = puente("federation", "verify", "--trust-root", root, "--directory", tampered)
    assert refused.returncode == 2
    assert "directory_under_threshold" in refused.stderr

    bad_doc = tmp_path / "notice.json"
    bad_doc.write_text(json.dumps({"case_ref": "MX-TEST-000001", "person": {}}))
    sent = puente(
        "send", "--dir", mx, "--from", "mx-inm", "--to", "GT/gt-reception", "--file", bad_doc
    )
    assert sent.returncode == 2
    assert "schema_invalid" in sent.stderr
    assert "Traceback" not in sent.stderr
    unknown = puente(
        "send", "--dir", mx, "--from", "mx-inm", "--to", "GT/nobody", "--file", bad_doc
    )
    assert unknown.returncode == 2 and "unknown_authority" in unknown.stderr
    status = puente("status", "--dir", mx, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["disclosures"] == []
