"""The operator and node-administrator commands, run as ``puente`` would run them.

Three operators keep their keys apart (one protected by a passphrase), build a
2-of-3 directory, sign it separately and merge the signatures; then they edit,
diff and re-sign it, hand the federation over to a new operator set (both
thresholds), install, refuse a rollback, take in a node's key rotation, revoke a
key, remove a node and publish the result for URL or file sources. Every
refusal is ``puente: <reason>: <detail>`` with exit code 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from node.commands.cli import main
from node.trust.at_rest import PASSPHRASE_ENV
from node.trust.edit import as_document

PASSPHRASE = "operator passphrase, long enough"


class Puente:
    """Runs ``puente`` in this process and keeps what it printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: object, expect: int = 0) -> str:
        code = main([str(a) for a in args])
        captured = self.capsys.readouterr()
        assert code == expect, captured.err or captured.out
        return captured.out if expect == 0 else captured.err


def node_dir(puente: Puente, base: Path, node_id: str, port: int) -> Path:
    data_dir = base / node_id.lower()
    puente(
        "init",
        "--dir",
        data_dir,
        "--id",
        node_id,
        "--name",
        f"{node_id} (test)",
        "--port",
        port,
        "--authority",
        f"{node_id.lower()}-authority:reception_centre:Autoridad de prueba",
    )
    return data_dir


def document(path: Path) -> dict[str, object]:
    return as_document(json.loads(path.read_text()))


def test_operator_workflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    puente = Puente(capsys)
    mx = node_dir(puente, tmp_path, "MX", 18601)
    gt = node_dir(puente, tmp_path, "GT", 18602)
    hn = node_dir(puente, tmp_path, "HN", 18603)

    # Each operator makes a key on their own machine; A protects it with a passphrase.
    secret = tmp_path / "a.pass"
    secret.write_text(PASSPHRASE)
    keys: dict[str, Path] = {}
    public: dict[str, Path] = {}
    for name in "ABCDE":
        extra = ("--passphrase-file", secret) if name == "A" else ()
        out = puente("federation", "keygen", "--out", tmp_path / f"op-{name}", *extra)
        assert ("NOT encrypted" in out) == (name != "A")
        keys[name] = next((tmp_path / f"op-{name}").glob("*.jwk"))
        public[name] = next((tmp_path / f"op-{name}").glob("*.public.json"))
        assert '"d"' not in public[name].read_text()
    a_pass = ("--passphrase-file", secret)

    root = tmp_path / "trust-root.json"
    puente("federation", "trust-root", "--federation", "test-fed", "--threshold", 2,
           *[arg for n in "ABC" for arg in ("--key", public[n])], "--out", root)  # fmt: skip

    # A draft, 2 of A, B, C; each signs separately; anyone merges.
    draft = tmp_path / "draft.json"
    puente("federation", "create", "--federation", "test-fed", "--threshold", 2,
           *[arg for n in "ABC" for arg in ("--operator", public[n])],
           "--entry", mx / "public" / "node-entry.json",
           "--entry", gt / "public" / "node-entry.json",
           "--entry", hn / "public" / "node-entry.json", "--out", draft)  # fmt: skip
    assert "signatures" not in json.loads(draft.read_text())
    puente("federation", "sign", "--draft", draft, "--key", keys["A"], *a_pass,
           "--out", tmp_path / "sig-a.json")  # fmt: skip
    locked = puente("federation", "sign", "--draft", draft, "--key", keys["A"],
                    "--out", tmp_path / "x.json", expect=2)  # fmt: skip
    assert locked.startswith("puente: key_locked:")
    puente(
        "federation", "sign", "--draft", draft, "--key", keys["B"], "--out", tmp_path / "sig-b.json"
    )
    v1 = tmp_path / "v1.json"
    out = puente(
        "federation", "merge", "--out", v1, tmp_path / "sig-a.json", tmp_path / "sig-b.json"
    )
    assert "2 signature(s) merged" in out
    verified = puente("federation", "verify", "--trust-root", root, "--directory", v1)
    assert (
        "v1 verifies" in verified and "signed by 2 of 3 trusted operators (threshold 2)" in verified
    )
    refused = puente("federation", "verify", "--trust-root", root,
                     "--directory", tmp_path / "sig-a.json", expect=2)  # fmt: skip
    assert refused.startswith("puente: directory_under_threshold:")
    for node in (mx, gt, hn):
        puente("federation", "install", "--dir", node, "--trust-root", root, "--directory", v1)

    # Version 2: an authority and an endpoint; diff shows it; B and C sign it.
    draft2 = tmp_path / "draft2.json"
    shutil.copy(v1, draft2)
    puente("federation", "add-authority", "--draft", draft2, "--node", "GT",
           "--authority", "gt-consulado:consulate:Consulado de prueba")  # fmt: skip
    puente("federation", "set-endpoint", "--draft", draft2, "--node", "GT",
           "--url", "https://gt.puente.test:8443")  # fmt: skip
    puente("federation", "bump", "--draft", draft2)
    diff = puente("federation", "diff", v1, draft2).splitlines()
    assert "version: 1 -> 2" in diff
    assert "~ node GT: + authority gt-consulado (consulate)" in diff
    assert any(line.startswith("~ node GT: endpoint https://127.0.0.1:18602 ->") for line in diff)
    v2 = sign_and_merge(puente, tmp_path, draft2, "v2", [keys["B"], keys["C"]])
    puente("federation", "verify", "--trust-root", root, "--directory", v2, "--previous", v1)

    # Version 3 hands the federation to D and E (2 of 2): old AND new thresholds.
    draft3 = tmp_path / "draft3.json"
    shutil.copy(v2, draft3)
    puente("federation", "set-operators", "--draft", draft3, "--threshold", 2,
           "--operator", public["D"], "--operator", public["E"])  # fmt: skip
    puente("federation", "bump", "--draft", draft3)
    assert "operators: threshold 2 -> 2" not in puente("federation", "diff", v2, draft3)
    new_only = sign_and_merge(puente, tmp_path, draft3, "v3-new-only", [keys["D"], keys["E"]])
    refused = puente("federation", "verify", "--trust-root", root, "--directory", new_only,
                     "--previous", v2, expect=2)  # fmt: skip
    assert refused.startswith("puente: directory_under_threshold:")
    v3 = sign_and_merge(
        puente, tmp_path, draft3, "v3", [keys["B"], keys["C"], keys["D"], keys["E"]]
    )
    verified = puente(
        "federation", "verify", "--trust-root", root, "--directory", v3, "--previous", v2
    )
    assert "signed by 2 of 3 trusted operators" in verified
    assert "signed by 2 of 2 its own operators" in verified
    for node in (mx, gt, hn):
        puente("federation", "install", "--dir", node, "--trust-root", root, "--directory", v2)
        puente("federation", "install", "--dir", node, "--trust-root", root, "--directory", v3)
    rollback = puente("federation", "install", "--dir", mx, "--trust-root", root,
                      "--directory", v2, expect=2)  # fmt: skip
    assert rollback.startswith("puente: directory_rollback:")

    # GT rotates its signing key; the operators take the new entry in and revoke HN's TLS
    # certificate, then remove HN; D and E alone now sign.
    out = puente("keys", "rotate", "--dir", gt, "--kind", "signing", "--lead-hours", 2)
    assert "new signing key" in out and "NOT encrypted" in out
    new_kid = out.split("new signing key ")[1].split()[0]
    draft4 = tmp_path / "draft4.json"
    shutil.copy(v3, draft4)
    gt_entry = gt / "public" / "node-entry.json"
    puente("federation", "add-node", "--draft", draft4, "--entry", gt_entry, "--replace")
    exists = puente("federation", "add-node", "--draft", draft4, "--entry", gt_entry, expect=2)
    assert exists.startswith("puente: node_exists:")
    hn_pin = json.loads((hn / "public" / "node-entry.json").read_text())["tls"][0]["x5t#S256"]
    # "--key-id=": a thumbprint may start with "-", which argparse would take for an option.
    puente("federation", "revoke-key", "--draft", draft4, "--node", "HN", f"--key-id={hn_pin}",
           "--at", "2026-01-01T00:00:00Z", "--reason", "keyCompromise")  # fmt: skip
    bad_time = puente("federation", "revoke-key", "--draft", draft4, "--node", "HN",
                      f"--key-id={hn_pin}", "--at", "yesterday", expect=2)  # fmt: skip
    assert bad_time.startswith("puente: bad_time:")
    puente("federation", "bump", "--draft", draft4)
    changes = puente("federation", "diff", v3, draft4)
    assert f"~ node GT: + signing key {new_kid} (from " in changes
    revoked = "REVOKED at 2026-01-01T00:00:00Z (keyCompromise)"
    assert f"~ node HN: tls pin {hn_pin}: always valid -> {revoked}" in changes
    puente("federation", "remove-node", "--draft", draft4, "--node", "HN")
    assert "- node HN (HN (test))" in puente("federation", "diff", v3, draft4)
    unknown = puente("federation", "remove-node", "--draft", draft4, "--node", "HN", expect=2)
    assert unknown.startswith("puente: unknown_node:")
    v4 = sign_and_merge(puente, tmp_path, draft4, "v4", [keys["D"], keys["E"]])
    puente("federation", "verify", "--trust-root", root, "--directory", v4, "--previous", v3)
    assert set(document(v4)["nodes"][i]["id"] for i in range(2)) == {"GT", "MX"}  # type: ignore[index]

    published = tmp_path / "www"
    out = puente("federation", "publish", "--directory", v4, "--out-dir", published)
    assert json.loads((published / "directory.json").read_text()) == json.loads(v4.read_text())
    assert (published / "4.directory.json").exists()

    # The node side: status shows the rotated key published but not yet active.
    puente("federation", "install", "--dir", gt, "--trust-root", root, "--directory", v4)
    status = json.loads(puente("keys", "status", "--dir", gt, "--json"))
    signing = {row["id"]: row for row in status if row["kind"] == "signing"}
    assert signing[new_kid]["state"] == "published" and signing[new_kid]["validity"].startswith(
        "from "
    )
    assert {row["at_rest"] for row in status} == {"NOT ENCRYPTED"}
    assert "nothing to switch" in puente("keys", "activate", "--dir", gt)
    # GT keeps every version it installed, for checking old receipts later.
    history = puente("federation", "history", "--dir", gt).splitlines()
    assert [line.split()[0] for line in history] == ["v1", "v2", "v3", "v4"]
    assert json.loads(puente("federation", "history", "--dir", gt, "--version", 1)) == json.loads(
        v1.read_text()
    )
    missing = puente("federation", "history", "--dir", gt, "--version", 9, expect=2)
    assert missing.startswith("puente: directory_version_unknown:")


def sign_and_merge(puente: Puente, base: Path, draft: Path, name: str, keys: list[Path]) -> Path:
    signatures = []
    for index, key in enumerate(keys):
        signature = base / f"{name}-sig{index}.json"
        puente("federation", "sign", "--draft", draft, "--key", key, "--out", signature)
        signatures.append(signature)
    merged = base / f"{name}.json"
    puente("federation", "merge", "--out", merged, *signatures)
    return merged
