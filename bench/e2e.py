"""End to end: two real ``puente serve`` processes over loopback mutual TLS.

Mexico's node (MX) holds the cases; a caseworker's client submits return
notices through MX's local API (``POST /api/v1/cases/{id}/disclosures``, over
HTTPS pinned to MX's certificate); MX plans, minimizes, seals and queues each
one, its deliverer sends it to Guatemala's node (GT) over mutual TLS, GT opens,
checks, stores (encrypted under its own data key) and receipts it, and MX
verifies the receipt and marks it delivered. Both nodes, their databases and
this load generator share the machine's cores.

Latency is from the moment the client sends the request (closed loop), or the
moment it was due to be sent (open loop: requests leave on a fixed schedule
whatever the answers, so a slow node cannot slow the load down and hide its
own queueing), to ``delivered_at`` — the time MX recorded the verified
receipt, read from MX's database after the run. Both are this machine's wall
clock.

``BENCH_UVLOOP=1`` (with uvloop installed by hand; it is no dependency) runs
the same nodes on uvloop's event loop, to repeat the experiment BENCHMARKS.md
reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench import procstat
from bench.profile import Recorder
from bench.stats import summary_ms
from bench.workload import RETURN_NOTICE, SPECS, case_document, consent_for
from node.api import users
from node.casework.cases import create_case
from node.casework.consents import record_consent
from node.core.config import load_config
from node.demo.local_federation import build_local_federation
from node.demo.run import wait_for_port
from node.storage.context import open_node
from node.storage.migrate import upgrade_to_head
from node.storage.models import Disclosure

# The per-user API rate limit (default 50/s, burst 200: one person at a keyboard)
# is raised for the bench's single client, which submits for a whole shift.
BENCH_API_RATE = 100_000.0
CLOSED_LOOP_CONCURRENCY = 32
PATIENCE_S = 300.0  # a run that has not drained by then is reported as such
IDLE_SETTLE_S = 5.0


@dataclass(frozen=True)
class Plan:
    """One run: closed loop (``rate`` None) or open loop at ``rate`` per second.

    ``delivery`` overrides the nodes' ``[delivery]`` settings for this run only
    (docs/delivery.md): the default sends one request at a time per peer, which
    keeps strict order; a window of several trades that for throughput.
    """

    name: str
    count: int
    rate: float | None
    delivery: tuple[tuple[str, int], ...] = ()


WINDOW = (("max_in_flight", 8), ("batch_size", 64))


def plans(quick: bool) -> list[Plan]:
    scale = 5 if quick else 1
    return [
        Plan("closed", 5_000 // scale, None),
        Plan("closed_window8", 2_000 // scale, None, WINDOW),
        Plan("open_50", 500 // scale, 50.0),  # 10 s of offered load
        Plan("open_200", 1_000 // scale, 200.0),  # 5 s
    ]


# Cases are created once per backend and each receives several disclosures, as a
# case does over its life; creating one per disclosure would triple the set-up time.
CASE_POOL = 1_000


@dataclass
class Submission:
    case_id: str
    due: float  # wall time the request was due (open loop) or sent (closed loop)
    sent: float = 0.0
    answered: float = 0.0
    status: int = 0
    message_id: str | None = None


@dataclass
class Federation:
    backend: str
    base: Path
    dirs: dict[str, Path]
    database_urls: dict[str, str]
    case_ids: list[str]
    token: str
    api_port: int
    cert_pem: str
    setup_s: float


async def _setup(
    backend: str, base: Path, database_urls: dict[str, str] | None, cases: int
) -> Federation:
    started = time.perf_counter()
    dirs = build_local_federation(
        base, SPECS, federation="bench", now=dt.datetime.now(dt.UTC), database_urls=database_urls
    )
    for data_dir in dirs.values():
        config = load_config(data_dir)
        api = dataclasses.replace(
            config.api,
            rate_per_second=BENCH_API_RATE,
            burst=100_000,
            # One load generator is one address: the per-address limit must not be what is measured.
            preauth_rate_per_second=BENCH_API_RATE,
            preauth_burst=100_000,
        )
        dataclasses.replace(config, api=api).save()
    route = RETURN_NOTICE
    mx = open_node(dirs[route.sender_node])
    gt = open_node(dirs[route.recipient_node])
    try:
        await upgrade_to_head(mx.engine)
        await upgrade_to_head(gt.engine)
        now = mx.now()
        case_ids = []
        for serial in range(cases):
            document = case_document(route, serial, now)
            case = await create_case(mx, authority=route.sender_authority, document=document)
            await record_consent(mx, consent_for(route, document["case_ref"], now))
            case_ids.append(case.case_id)
        await users.create_user(
            mx, username="bench.caseworker", role="caseworker", authority=route.sender_authority
        )
        token, _ = await users.issue_token(mx, "bench.caseworker", lifetime=dt.timedelta(days=1))
        return Federation(
            backend=backend,
            base=base,
            dirs=dirs,
            database_urls={
                node_id: load_config(path).database_url for node_id, path in dirs.items()
            },
            case_ids=case_ids,
            token=token,
            api_port=mx.config.api.port,
            cert_pem=mx.keys.tls.cert_pem.decode("ascii"),
            setup_s=time.perf_counter() - started,
        )
    finally:
        await mx.close()
        await gt.close()


_UVLOOP_SERVE = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from node.commands.cli import main; sys.exit(main(sys.argv[1:]))"
)


class NodeProcess:
    """``python -m node.commands serve --dir D`` in its own session, its log in ``D/serve.log``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        config = load_config(data_dir)
        self.ports = [config.port] + ([config.api.port] if config.api.port else [])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.data_dir / "serve.log").open("ab") as log:
            command = [sys.executable, "-m", "node.commands", "serve", "--dir", str(self.data_dir)]
            if os.environ.get("BENCH_UVLOOP"):  # an experiment: the same node on uvloop
                command[1:3] = ["-c", _UVLOOP_SERVE]
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for port in self.ports:
            wait_for_port(port, self.process, timeout=60)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def _client_ssl(cert_pem: str) -> ssl.SSLContext:
    """Trust exactly MX's own certificate, as docs/api.md tells API users to."""
    context = ssl.create_default_context(cadata=cert_pem)
    context.check_hostname = False  # the certificate names 127.0.0.1 as an IP SAN
    return context


async def _submit(session: aiohttp.ClientSession, fed: Federation, submission: Submission) -> None:
    route = RETURN_NOTICE
    body = {
        "doc_type": route.doc_type,
        "purpose": route.purpose,
        "recipient": {"node": route.recipient_node, "authority": route.recipient_authority},
    }
    submission.sent = time.time()
    try:
        async with session.post(
            f"https://127.0.0.1:{fed.api_port}/api/v1/cases/{submission.case_id}/disclosures",
            json=body,
            headers={"Authorization": f"Bearer {fed.token}"},
        ) as response:
            answer = await response.json(content_type=None)
            submission.status = response.status
            if response.status == 202:
                submission.message_id = answer["message_id"]
    except (aiohttp.ClientError, TimeoutError):
        submission.status = -1
    submission.answered = time.time()


async def _closed_loop(
    session: aiohttp.ClientSession, fed: Federation, cases: Sequence[str]
) -> list[Submission]:
    queue = list(reversed(cases))
    done: list[Submission] = []

    async def submitter() -> None:
        while queue:
            submission = Submission(queue.pop(), due=0.0)
            await _submit(session, fed, submission)
            submission.due = submission.sent
            done.append(submission)

    await asyncio.gather(*(submitter() for _ in range(CLOSED_LOOP_CONCURRENCY)))
    return done


async def _open_loop(
    session: aiohttp.ClientSession, fed: Federation, cases: Sequence[str], rate: float
) -> list[Submission]:
    start = time.time() + 0.2
    submissions = [Submission(case_id, due=start + i / rate) for i, case_id in enumerate(cases)]
    tasks = []
    for submission in submissions:
        delay = submission.due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_submit(session, fed, submission)))
    await asyncio.gather(*tasks)
    return submissions


def _reader(url: str) -> AsyncEngine:
    # A plain engine: the node's own takes SQLite's write lock even to read.
    return create_async_engine(url)


async def _pending(engine: AsyncEngine, ids: set[str]) -> int:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Disclosure.message_id).where(Disclosure.state.in_(("queued", "sending")))
        )
        return sum(1 for (message_id,) in rows if message_id in ids)


async def _outcomes(engine: AsyncEngine, ids: set[str]) -> dict[str, tuple[str, float | None]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Disclosure.message_id, Disclosure.state, Disclosure.delivered_at)
        )
        return {
            message_id: (state, delivered.timestamp() if delivered else None)
            for message_id, state, delivered in rows
            if message_id in ids
        }


async def _run_plan(
    fed: Federation, plan: Plan, offset: int, profile_dir: Path | None
) -> dict[str, Any]:
    defaults = {node_id: load_config(path) for node_id, path in fed.dirs.items()}
    for config in defaults.values():
        delivery = dataclasses.replace(config.delivery, **dict(plan.delivery))
        dataclasses.replace(config, delivery=delivery).save()
    nodes = {node_id: NodeProcess(path) for node_id, path in fed.dirs.items()}
    reader = _reader(fed.database_urls[RETURN_NOTICE.sender_node])
    recorders: list[Recorder] = []
    try:
        for node in nodes.values():
            node.start()
        await asyncio.sleep(1.0)  # let start-up work (migrations check, first sweep) finish
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            recorders = [
                Recorder(node.pid, profile_dir / f"{fed.backend}-{plan.name}-{node_id}.raw")
                for node_id, node in nodes.items()
            ]
        cases = [fed.case_ids[(offset + i) % len(fed.case_ids)] for i in range(plan.count)]
        before = {node_id: procstat.sample(node.pid) for node_id, node in nodes.items()}
        own_cpu = time.process_time()
        started = time.time()
        connector = aiohttp.TCPConnector(ssl=_client_ssl(fed.cert_pem), limit=256)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            if plan.rate is None:
                submissions = await _closed_loop(session, fed, cases)
            else:
                submissions = await _open_loop(session, fed, cases, plan.rate)
        submitted = time.time()
        ids = {s.message_id for s in submissions if s.message_id}
        deadline = time.monotonic() + PATIENCE_S
        # Another process does the work: polling its database is the way to see it.
        while time.monotonic() < deadline and await _pending(reader, ids):  # noqa: ASYNC110
            await asyncio.sleep(0.25)
        drained = time.time()
        for recorder in recorders:
            recorder.stop()
        after = {node_id: procstat.sample(node.pid) for node_id, node in nodes.items()}
        own_cpu = time.process_time() - own_cpu
        outcomes = await _outcomes(reader, ids)
        await asyncio.sleep(IDLE_SETTLE_S)
        settled = {node_id: procstat.sample(node.pid) for node_id, node in nodes.items()}
    finally:
        for recorder in recorders:
            recorder.stop()
        for node in nodes.values():
            node.stop()
        await reader.dispose()
        for config in defaults.values():
            config.save()
    return _report(
        plan, submissions, outcomes, started, submitted, drained, before, after, settled, own_cpu
    )


def _report(
    plan: Plan,
    submissions: list[Submission],
    outcomes: dict[str, tuple[str, float | None]],
    started: float,
    submitted: float,
    drained: float,
    before: dict[str, procstat.Sample],
    after: dict[str, procstat.Sample],
    settled: dict[str, procstat.Sample],
    own_cpu: float,
) -> dict[str, Any]:
    accepted = [s for s in submissions if s.message_id]
    latencies = []
    delivered_at = []
    states: dict[str, int] = {}
    for s in accepted:
        state, at = outcomes.get(s.message_id or "", ("missing", None))
        states[state] = states.get(state, 0) + 1
        if state == "delivered" and at is not None:
            latencies.append(at - s.due)
            delivered_at.append(at)
    refused: dict[str, int] = {}
    for s in submissions:
        if not s.message_id:
            refused[str(s.status)] = refused.get(str(s.status), 0) + 1
    first = min(s.due for s in submissions)
    last_delivery = max(delivered_at) if delivered_at else drained
    wall = max(last_delivery - first, 1e-9)
    window = max(drained - started, 1e-9)
    return {
        "plan": plan.name,
        "delivery": dict(plan.delivery),
        "offered_per_s": plan.rate,
        "submitted": len(submissions),
        "accepted": len(accepted),
        "refused_by_status": refused,
        "states": states,
        "accept_per_s": len(accepted) / max(submitted - started, 1e-9),
        "throughput_per_s": len(delivered_at) / wall,
        "wall_s": wall,
        "accept_latency": summary_ms([s.answered - s.sent for s in accepted]),
        "latency": summary_ms(latencies),
        "nodes": {
            node_id: {
                "cpu_s": after[node_id].cpu_s - before[node_id].cpu_s,
                "cpu_cores": (after[node_id].cpu_s - before[node_id].cpu_s) / window,
                "peak_rss_mb": after[node_id].peak_rss_mb,
                "rss_after_idle_mb": settled[node_id].rss_mb,
            }
            for node_id in before
        },
        "load_generator_cpu_cores": own_cpu / window,
    }


async def _run_backend(
    backend: str,
    base: Path,
    database_urls: dict[str, str] | None,
    quick: bool,
    profile_dir: Path | None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    runs = [plan for plan in plans(quick) if not only or plan.name in only]
    cases = min(CASE_POOL, max(plan.count for plan in runs))
    fed = await _setup(backend, base, database_urls, cases)
    results: dict[str, Any] = {"setup_s": fed.setup_s, "cases": cases, "runs": {}}
    offset = 0
    for plan in runs:
        results["runs"][plan.name] = await _run_plan(fed, plan, offset, profile_dir)
        offset += plan.count
    return results


def run(
    *,
    quick: bool,
    backends: list[str],
    postgres: Any,
    profile_dir: Path | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Per backend: a closed-loop run and open-loop runs at fixed offered loads."""
    results: dict[str, Any] = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="puente-bench-e2e-") as tmp:
            urls = _databases(backend, postgres, "bench")
            results[backend] = asyncio.run(
                _run_backend(backend, Path(tmp), urls, quick, profile_dir, only)
            )
    return results


def _databases(backend: str, postgres: Any, prefix: str) -> dict[str, str] | None:
    """Fresh PostgreSQL databases for MX and GT, or None (each node's own SQLite file)."""
    if backend != "postgresql":
        return None
    suffix = uuid.uuid4().hex[:8]
    return {
        node_id: asyncio.run(postgres.create_database(f"{prefix}_{node_id.lower()}_{suffix}"))
        for node_id in ("MX", "GT")
    }


IDLE_WAIT_S = 10.0


async def _idle_backend(backend: str, base: Path, database_urls: dict[str, str] | None) -> Any:
    fed = await _setup(backend, base, database_urls, cases=0)
    nodes = {node_id: NodeProcess(path) for node_id, path in fed.dirs.items()}
    try:
        for node in nodes.values():
            node.start()
        # Idle: started, migrated, listening, the first sweep and directory refresh done.
        await asyncio.sleep(IDLE_WAIT_S)
        samples = {node_id: procstat.sample(node.pid) for node_id, node in nodes.items()}
    finally:
        for node in nodes.values():
            node.stop()
    return {
        node_id: {"rss_mb": s.rss_mb, "peak_rss_mb": s.peak_rss_mb}
        for node_id, s in samples.items()
    }


def run_idle(*, backends: list[str], postgres: Any) -> dict[str, Any]:
    """VmRSS of each node process, started fresh and left idle for a few seconds."""
    results: dict[str, Any] = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="puente-bench-idle-") as tmp:
            urls = _databases(backend, postgres, "idle")
            results[backend] = asyncio.run(_idle_backend(backend, Path(tmp), urls))
    return results
