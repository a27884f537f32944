"""Patroni from deploy/patroni/patroni.yml: a leader, a synchronous standby, a failover.

The production path for the highly available node's database is Debian's
Patroni with etcd. This starts that configuration for real (one etcd, two
members on loopback), checks that the standby is synchronous (so failover keeps
every acknowledged commit), kills the leader like a crashed host, and sees the
standby take over with the data, the leader key in etcd moving with it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from tests.support.patroni import (
    TEMPLATE,
    PatroniCluster,
    PatroniMember,
    patroni_unavailable,
    render_template,
)
from tests.support.postgres import find_postgres_bindir

_UNAVAILABLE = patroni_unavailable()
pytestmark = [
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"Patroni test bed: {_UNAVAILABLE}"),
]


def _api_status(member: PatroniMember, path: str) -> int:
    try:
        return member.api(path)[0]
    except OSError:
        return 0


async def _in_recovery(dsn: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        in_recovery: bool = await connection.fetchval("SELECT pg_is_in_recovery()")
    finally:
        await connection.close()
    return in_recovery


def _roles_are(cluster: PatroniCluster, expected: dict[str, str], via: PatroniMember) -> bool:
    return cluster.roles(via) == expected


def _production_values() -> dict[str, str]:
    return {
        "scope": "puente",
        "member_name": "db1",
        "member_address": "10.0.0.11",
        "restapi_listen": "0.0.0.0:8008",
        "restapi_port": "8008",
        "etcd_hosts": "10.0.0.11:2379,10.0.0.12:2379,10.0.0.13:2379",
        "ttl": "30",
        "loop_wait": "10",
        "retry_timeout": "10",
        "pg_listen": "0.0.0.0:5432",
        "pg_port": "5432",
        "data_dir": "/var/lib/postgresql/15/puente",
        "bin_dir": str(find_postgres_bindir()),
        "socket_dir": "/var/run/postgresql",
        "pgpass": "/var/lib/postgresql/.pgpass.patroni",
        "member_network": "10.0.0.0/24",
        "client_network": "10.0.1.0/24",
        "superuser_password": "s",
        "replication_password": "r",
        "rewind_password": "w",
        "watchdog_mode": "required",
    }


def _validate(config: str, path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(config, encoding="utf-8")
    return subprocess.run(
        ["patroni", "--validate-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_template_renders_with_production_values_and_patroni_validates_it(
    tmp_path: Path,
) -> None:
    assert TEMPLATE.is_file()
    with pytest.raises(KeyError):
        render_template({"scope": "puente"})  # every placeholder needs a value
    rendered = render_template(_production_values())
    assert "${" not in rendered
    assert "synchronous_mode: true" in rendered

    result = _validate(rendered, tmp_path / "patroni.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator does reject a broken file (so the pass above means something).
    broken = rendered.replace("listen: 0.0.0.0:8008", "listen: nowhere")
    result = _validate(broken, tmp_path / "broken.yml")
    assert result.returncode != 0 and "restapi.listen" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_leader_with_sync_standby_fails_over_without_losing_commits() -> None:
    started = time.monotonic()
    with PatroniCluster(members=2) as cluster:
        db1, db2 = cluster.member("db1"), cluster.member("db2")
        await cluster.async_wait_until(
            lambda: _roles_are(cluster, {"db1": "leader", "db2": "sync_standby"}, db1),
            what="db1 leader with db2 as synchronous standby",
        )
        assert cluster.leader_key() == "db1"
        assert (_api_status(db1, "/primary"), _api_status(db2, "/primary")) == (200, 503)
        assert _api_status(db2, "/replica") == 200

        leader = await asyncpg.connect(cluster.dsn(db1))
        try:
            # Patroni, not our configuration, names the standby synchronous.
            assert await leader.fetchval("SHOW synchronous_standby_names") == "db2"
            state = await leader.fetch(
                "SELECT application_name, sync_state FROM pg_stat_replication"
            )
            assert [(row["application_name"], row["sync_state"]) for row in state] == [
                ("db2", "sync")
            ]
            await leader.execute("CREATE TABLE acknowledged (id integer PRIMARY KEY)")
            await leader.execute("INSERT INTO acknowledged SELECT generate_series(1, 500)")
        finally:
            await leader.close()

        kill_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, db1)
        # Taken over once db2 holds the leader key and answers GET /primary with
        # 200 (what a load balancer's health check asks)...
        takeover = await cluster.async_wait_until(
            lambda: (
                cluster.roles(db2).get("db2") == "leader" and _api_status(db2, "/primary") == 200
            ),
            what="db2 promoted after db1 was killed",
            patience=120,
        )
        assert not db1.running
        assert cluster.leader_key() == "db2"
        # ...but Patroni says "primary" as soon as it has asked PostgreSQL to
        # promote: the server may still be finishing recovery for a moment, so
        # clients must retry a read-only error. Wait until it takes writes.
        deadline = time.monotonic() + 60
        while await _in_recovery(cluster.dsn(db2)):
            assert time.monotonic() < deadline, "db2 never left recovery"
            await asyncio.sleep(0.1)

        promoted = await asyncpg.connect(cluster.dsn(db2))
        try:
            assert await promoted.fetchval("SELECT count(*) FROM acknowledged") == 500
            # Non-strict synchronous mode: alone, the new leader still takes writes.
            await promoted.execute("INSERT INTO acknowledged VALUES (501)")
            assert await promoted.fetchval("SELECT max(id) FROM acknowledged") == 501
        finally:
            await promoted.close()
        # db1's member key expires with its lease: the cluster is db2 alone.
        await cluster.async_wait_until(
            lambda: cluster.roles(db2) == {"db2": "leader"}, what="db1 gone from the cluster"
        )
        failover_seconds = time.monotonic() - kill_at
    print(
        f"patroni: cluster up and failover in {time.monotonic() - started:.1f}s "
        f"(takeover {takeover:.1f}s, writable {failover_seconds:.1f}s after the kill)"
    )
