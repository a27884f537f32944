"""The folders of node/ are the parts ARCHITECTURE.md names, and the layers hold.

import-linter checks the layers in `make lint`; these tests prove that its
contracts can fail (a deliberately wrong import in a copy of the package) and
that ARCHITECTURE.md's table of parts is the tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    for package in ("node", "audit"):
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def _lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(project / "pyproject.toml")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "wrong_import", "broken"),
    [
        ("rules/consent.py", "import node.storage.models", "no I/O"),
        ("wire/envelope.py", "import aiohttp", "no I/O"),
        ("core/errors.py", "import node.casework.cases", "Edges over services"),
        ("casework/cases.py", "import node.api.users", "Edges over services"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, wrong_import: str, broken: str
) -> None:
    project = _copy_project(tmp_path)
    target = project / "node" / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # noqa\n")
    result = _lint_imports(project)
    assert result.returncode != 0, result.stdout
    assert re.search(rf"{re.escape(broken)}[^\n]*BROKEN", result.stdout), result.stdout


def test_the_verifier_may_not_import_the_node(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    target = project / "audit" / "note.py"
    target.write_text(target.read_text() + "\nimport node.core.errors  # noqa\n")
    result = _lint_imports(project)
    assert result.returncode != 0
    assert re.search(r"verifier[^\n]*BROKEN", result.stdout), result.stdout


def test_the_contracts_hold_on_the_tree(tmp_path: Path) -> None:
    result = _lint_imports(_copy_project(tmp_path))
    assert result.returncode == 0, result.stdout
    assert "0 broken" in result.stdout


def _parts_in_architecture() -> set[str]:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Parts", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `node/(\w+)/` \|", section, flags=re.MULTILINE))


def test_architecture_names_every_subpackage_and_no_other() -> None:
    tree = {
        p.name for p in (ROOT / "node").iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    assert _parts_in_architecture() == tree


def test_node_has_at_most_fifteen_entries() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "node"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    top = {path.split("/")[1] for path in tracked}
    assert len(top) <= 15, sorted(top)


PARTS = (
    "core|trust|wire|rules|storage|auditlog|casework|intake|delivery|federation|api|demo|commands"
)


def test_architecture_names_only_modules_that_exist() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(rf"(?<![/\w.])((?:{PARTS})\.[a-z_]+)\b(?!\.(?:md|py|json))", text))
    assert len(named) > 30, "the flow and the parts name package.module"
    missing = sorted(
        m for m in named if not (ROOT / "node" / (m.replace(".", "/") + ".py")).exists()
    )
    assert not missing, missing
