"""Build and run tests/support/goc2sp_go (Go's golang.org/x/mod sumdb/note and sumdb/tlog).

``make test`` installs the toolchain (scripts/ensure-go-c2sp); the program is
compiled offline against Debian's /usr/share/gocode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "goc2sp_go"
GOPATH = Path("/usr/share/gocode")


def build(out_dir: Path) -> Path:
    go = shutil.which("go")
    if go is None or not (GOPATH / "src/golang.org/x/mod/sumdb/note/note.go").exists():
        pytest.fail("Go and golang.org/x/mod are missing: run `bash scripts/ensure-go-c2sp`")
    binary = out_dir / "goc2sp"
    env = {
        **os.environ,
        "GOPATH": str(GOPATH),
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOCACHE": str(out_dir / "gocache"),
    }
    subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=SOURCE, env=env, check=True, timeout=240
    )
    return binary


def run(binary: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
