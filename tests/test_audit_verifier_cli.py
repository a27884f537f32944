"""The independent verifier as an auditor runs it (``python -m audit``), on a real export.

MX's checkpoint is cosigned by GT while HN is down. The verifier takes the
keys from the signed federation directory once it has checked the operators'
signatures, prints witness times as dates, warns that HN did not cosign
(fails with ``--require-witnesses``), and honours a directory's witness
quorum. What the auditor gives wrongly (a missing folder, a malformed key, a
directory the trust root did not sign) is an input error, never a verdict on
the log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.auditlog.export import export_log
from node.auditlog.witness_rounds import witness_round
from node.trust.directory import sign_directory
from node.trust.keys import SIGNING_CURVE, load_jwk
from tests.support.nodes import DatabaseFactory, live_federation


def audit_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "audit", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_verifier_speaks_to_auditors(
    tmp_path: Path, database_factory: DatabaseFactory
) -> None:
    fed = tmp_path / "fed"
    async with live_federation(fed, database_factory) as nodes:
        mx, hn = nodes["MX"], nodes["HN"]
        await hn.stop()
        results = await witness_round(mx.ctx)
        assert {
            r.witness: r.outcome for r in results if r.origin.startswith("puente.int/audit/MX")
        }["GT"] == "cosigned"
        export = tmp_path / "export"
        await export_log(mx.ctx, export)
        data = mx.ctx.config.data_dir
        trust_root, directory = data / "trust-root.json", data / "directory.json"
        document = json.loads(json.dumps(mx.ctx.directory.document))

    # Keys from the signed directory: GT's cosignature as a date, HN named as missing.
    checked = audit_cli("verify", export, "--directory", directory, "--trust-root", trust_root)
    assert checked.returncode == 0, checked.stderr
    assert "witnessed by puente.int/witness/GT/" in checked.stdout and " UTC" in checked.stdout
    assert "POSIX" not in checked.stdout
    assert "WARNING: witnessed by 1 of the 2" in checked.stdout and "HN (" in checked.stdout
    strict = audit_cli("verify", export, "--trust-root", trust_root, "--require-witnesses")
    assert strict.returncode == 1 and "too few witnesses" in strict.stdout
    as_json = json.loads(audit_cli("verify", export, "--trust-root", trust_root, "--json").stdout)
    assert as_json["witnesses_required"] == 2 and as_json["keys_from"].startswith("directory")
    assert [m.split(" ")[0] for m in as_json["witnesses_missing"]] == ["HN"]

    # The federation's witness policy asks for one cosignature: no warning, strict passes.
    (operator,) = (fed / "operator").glob("*[!c].jwk")  # the private key, not *.public.json
    document["witness_policy"] = {"quorum": 1}
    document["version"] += 1
    lenient = tmp_path / "directory-quorum-1.json"
    signed = sign_directory(document, [load_jwk(operator, curve=SIGNING_CURVE)])
    lenient.write_text(json.dumps(signed), "utf-8")
    policy = audit_cli(
        "verify", export, "--directory", lenient, "--trust-root", trust_root, "--require-witnesses"
    )
    assert policy.returncode == 0 and "WARNING" not in policy.stdout, policy.stdout

    # The keys command checks the directory first, then prints and writes the keys.
    keys = audit_cli(
        "keys",
        "--directory",
        lenient,
        "--trust-root",
        trust_root,
        "--node",
        "MX",
        "--out",
        tmp_path,
    )
    assert keys.returncode == 0, keys.stderr
    assert "each checkpoint cosigned by 1 other member" in keys.stdout
    assert (tmp_path / "vkey").read_text().startswith("puente.int/audit/MX/")
    assert len((tmp_path / "witnesses").read_text().splitlines()) == 2
    forged = json.loads(lenient.read_text())
    forged["payload"] = signed["payload"][:-4] + "AAAA"
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    refused = audit_cli("keys", "--directory", tmp_path / "forged.json", "--trust-root", trust_root)
    assert refused.returncode == 1 and "directory_not_trusted" in refused.stderr

    # Input errors: exit 2 and a reason, never "the log is not the one that was signed".
    (tmp_path / "bad.vkey").write_text("not a key\n")
    (tmp_path / "empty").mkdir()
    bad_input: list[tuple[list[str | Path], str]] = [
        (["verify", tmp_path / "missing"], "not_an_export"),
        (["verify", tmp_path / "empty"], "not_an_export"),
        (["verify", export, "--vkey", tmp_path / "bad.vkey"], "bad_verifier_key"),
        (["verify", export, "--vkey", tmp_path / "absent.vkey"], "no_such_file"),
        (["verify", export, "--directory", directory], "missing_option"),
        (["inclusion", tmp_path / "p.json", "--vkey", tmp_path / "bad.vkey"], "bad_verifier_key"),
        (["keys", "--directory", trust_root, "--trust-root", trust_root], "bad_directory"),
    ]
    for argv, reason in bad_input:
        answer = audit_cli(*argv)
        assert answer.returncode == 2, (argv, answer.stdout, answer.stderr)
        assert answer.stderr.startswith(f"puente-audit: {reason}:"), answer.stderr
        assert "not the one that was signed" not in answer.stdout + answer.stderr
