"""deploy/: the container files that no test can run here stay consistent with the repository.

This machine (and CI) has no container engine, so the Containerfile and the
compose file are never built or started by the suite. What can be checked is
checked: they parse, they name files that exist, the compose HAProxy
configuration is exactly the template rendered for the compose services (and
HAProxy accepts it), and the image runs the node as `puente serve --dir
/var/lib/puente` as the unprivileged `puente` user.

Regenerate deploy/haproxy/compose.cfg after changing the template with
`PUENTE_REGENERATE=1 pytest tests/ha/test_deploy_files.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.haproxy import Backend, render_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_CFG = DEPLOY / "haproxy" / "compose.cfg"
COMPOSE_CFG_HEADER = (
    "# GENERATED from deploy/haproxy/haproxy.cfg for deploy/compose.yaml; do not edit.\n"
    "# Regenerate: PUENTE_REGENERATE=1 pytest tests/ha/test_deploy_files.py\n"
)


def _compose_haproxy_cfg() -> str:
    return COMPOSE_CFG_HEADER + render_config(
        federation_bind="0.0.0.0:8443",
        api_bind="0.0.0.0:9443",
        backends=[
            Backend("worker1", 8443, 9443, "worker1"),
            Backend("worker2", 8443, 9443, "worker2"),
        ],
        runtime_socket=Path("/tmp/haproxy-admin.sock"),
        chroot_dir=None,  # the official image already runs as the haproxy user
        check_inter="2s",
    )


def _compose() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Containerfile, continuation lines joined."""
    text = (DEPLOY / "Containerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_compose_haproxy_config_is_the_rendered_template() -> None:
    expected = _compose_haproxy_cfg()
    if os.environ.get("PUENTE_REGENERATE"):
        COMPOSE_CFG.write_text(expected, encoding="utf-8")
    assert COMPOSE_CFG.read_text(encoding="utf-8") == expected, (
        "deploy/haproxy/compose.cfg is stale; regenerate it (see this module's docstring)"
    )


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_haproxy_accepts_the_compose_config() -> None:
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(COMPOSE_CFG)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_describes_two_workers_postgres_and_haproxy() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "worker1", "worker2", "haproxy"}
    for name in ("worker1", "worker2"):
        worker = services[name]
        assert "entrypoint" not in worker  # the image's `puente serve --dir /var/lib/puente`
        assert worker["command"] == ["--passphrase-file", "/run/secrets/puente-passphrase"]
        assert worker["volumes"] == ["puente-data:/var/lib/puente"]
        assert worker["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert worker["build"]["dockerfile"] == "deploy/Containerfile"
        assert (DEPLOY / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    # HAProxy's configuration file is the one the test above keeps in step.
    [mount] = services["haproxy"]["volumes"]
    source, target, mode = mount.split(":")
    assert (DEPLOY / source).resolve() == COMPOSE_CFG
    assert (target, mode) == ("/usr/local/etc/haproxy/haproxy.cfg", "ro")
    # The backends HAProxy names are the worker services, on the ports the image exposes.
    config = COMPOSE_CFG.read_text(encoding="utf-8")
    for name in ("worker1", "worker2"):
        assert f"server {name} {name}:8443 check port 9443" in config
    assert set(compose["secrets"]) == {"postgres-password", "puente-passphrase"}


def test_containerfile_runs_the_node_unprivileged_from_the_wheel() -> None:
    instructions = _instructions()
    froms = [args for word, args in instructions if word == "FROM"]
    assert all(args.split()[0].endswith("python:3.11-slim-bookworm") for args in froms)
    assert ("USER", "puente:puente") in instructions
    assert ("VOLUME", '["/var/lib/puente"]') in instructions
    [entrypoint] = [json.loads(args) for word, args in instructions if word == "ENTRYPOINT"]
    assert entrypoint == ["puente", "serve", "--dir", "/var/lib/puente"]
    runs = " ".join(args for word, args in instructions if word == "RUN")
    assert "pip wheel" in runs and "pip install --no-cache-dir /tmp/wheels/puente-" in runs
    # Every path the build copies from the repository exists.
    for word, args in instructions:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _target = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"Containerfile copies missing {source}"
    # The USER line comes after the install, so the node cannot write its own code.
    words = [word for word, _ in instructions]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
