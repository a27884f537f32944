"""``puente demo --once``: the newcomer's first command works and tells the story."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_once_exits_zero_and_reports_every_receipt(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node.commands", "demo", "--once", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5/5 notices received and receipted. OK" in result.stdout
    assert result.stdout.count("receipt signed by") == 5
    # A consulate's handoff: previewed, sent, withdrawn, erased at both recipients.
    assert result.stdout.count("preview of the case_handoff to MX/") == 2
    assert result.stdout.count("held only encrypted under its own data key: yes") == 2
    assert result.stdout.count("signed erasure receipt from MX") == 2
    assert "2/2 recipients confirmed erasure. OK" in result.stdout
    # The critical route: identified, assessed, her choice, handed off with her location withheld.
    assert "refused: voluntary_return_choice_missing" in result.stdout
    assert "durable_solution.location: WITHHELD (withheld_for_safety)" in result.stdout
    assert "critical route: OK" in result.stdout
    # Each node's signed checkpoint, cosigned by both peers, and the verifier's verdict.
    assert result.stdout.count("| \u2014 puente.int/witness/") == 6
    assert result.stdout.count("OK: puente.int/audit/") == 3
    for country in ("MX", "GT", "HN"):
        assert (tmp_path / "demo" / country / "puente.db").exists()
    # The demo's own nodes were stopped: nothing keeps listening after --once.
    assert "Traceback" not in result.stderr
