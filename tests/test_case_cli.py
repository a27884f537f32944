"""``puente case``, ``puente consent`` and ``puente disclose`` as a caseworker types them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from node.commands.cli import main
from node.demo.local_federation import build_local_federation
from node.demo.synthetic_cases import consent_draft, interviewed_case
from tests.support.cases import CASE_SPECS, CONSULATE

CASE_REF = "GT-CLI-2026-000001"


@pytest.fixture
def gt_dir(tmp_path: Path) -> Path:
    dirs = build_local_federation(
        tmp_path / "fed", CASE_SPECS, federation="cli-test", now=dt.datetime.now(dt.UTC)
    )
    return dirs["GT"]


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_a_caseworker_records_previews_sends_and_withdraws(
    gt_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = dt.datetime.now(dt.UTC)
    case = interviewed_case(case_ref=CASE_REF, node="GT", authority=CONSULATE, asked_at=now)
    draft = consent_draft(
        case_ref=CASE_REF,
        node="GT",
        authority=CONSULATE,
        recipients=[{"country": "MX", "authority_kind": "protection_agency"}],
        valid_until=now + dt.timedelta(days=30),
    )
    d = str(gt_dir)
    assert main(["case", "create", "--dir", d, "--authority", CONSULATE,
                 "--file", str(write(tmp_path / "case.json", case))]) == 0  # fmt: skip
    assert main(["consent", "record", "--dir", d,
                 "--file", str(write(tmp_path / "consent.json", draft))]) == 0  # fmt: skip
    recorded = capsys.readouterr().out.splitlines()
    assert recorded[0].startswith("case ") and recorded[1].startswith("consent ")
    consent_id = recorded[1].split()[1]

    common = ["--dir", d, "--case", CASE_REF, "--type", "case_handoff",
              "--purpose", "protection_referral"]  # fmt: skip
    assert main(["disclose", "preview", *common, "--to", "MX/mx-comar"]) == 0
    preview = capsys.readouterr().out
    assert "+ interview.coverage[].topic" in preview
    assert "- person.identity_document.number" in preview and "not_in_policy" in preview

    # Not consented: the preview says why and the exit code says refused.
    assert main(["disclose", "preview", *common, "--to", "MX/mx-inm"]) == 2
    refused = capsys.readouterr()
    assert "puente: recipient_not_consented:" in refused.err
    assert main(["disclose", "send", *common, "--to", "MX/mx-inm"]) == 2
    assert "puente: recipient_not_consented:" in capsys.readouterr().err

    assert main(["disclose", "send", *common, "--to", "MX/mx-comar", "--json"]) == 0
    sent = json.loads(capsys.readouterr().out)
    assert sent["ok"] and sent["consent_id"] == consent_id
    assert sent["policy"]["id"] == "puente.case-handoff"

    assert main(["case", "coverage", "--dir", d, CASE_REF, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "fear_of_return" in report["covered"] and "disability" in report["missing"]

    assert main(["consent", "withdraw", "--dir", d, consent_id,
                 "--officer", f"{CONSULATE}:officer-9"]) == 0  # fmt: skip
    assert "1 queued disclosure(s) stopped" in capsys.readouterr().out
    assert main(["consent", "show", "--dir", d, consent_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["effective_status"] == "withdrawn"
    assert [h["status"] for h in shown["consent"]["history"]] == ["given", "withdrawn"]
    assert shown["disclosures"][0]["state"] == "withdrawn"

    assert main(["consent", "withdraw", "--dir", d, consent_id,
                 "--officer", f"{CONSULATE}:officer-9"]) == 2  # fmt: skip
    assert "puente: consent_not_active:" in capsys.readouterr().err


def test_bad_input_is_a_refusal_with_a_reason(
    gt_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(gt_dir)
    bad = write(tmp_path / "bad.json", {"case_ref": "x"})
    assert main(["case", "create", "--dir", d, "--authority", CONSULATE, "--file", str(bad)]) == 2
    assert "puente: case_invalid:" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main(["consent", "record", "--dir", d, "--file", str(tmp_path / "broken.json")]) == 2
    assert "puente: bad_document:" in capsys.readouterr().err
    assert main(["case", "show", "--dir", d, "GT-NOT-A-CASE"]) == 2
    assert "puente: unknown_case:" in capsys.readouterr().err
    case = interviewed_case(
        case_ref=CASE_REF, node="GT", authority=CONSULATE, asked_at=dt.datetime.now(dt.UTC)
    )
    del case["interview"]["coverage"][0]  # "identity" asked by nobody, answered nowhere: fine
    case["interview"]["coverage"] = [
        c for c in case["interview"]["coverage"] if c["topic"] != "fear_of_return"
    ]
    case["interview"]["identification_indicators"].append("fear_of_return")
    uncovered = write(tmp_path / "uncovered.json", case)
    assert main(["case", "create", "--dir", d, "--authority", CONSULATE,
                 "--file", str(uncovered)]) == 2  # fmt: skip
    assert "puente: coverage_missing:" in capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err
