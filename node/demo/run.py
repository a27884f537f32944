"""``puente demo``: a local federation of three countries exchanging return notices.

Mexico's migration authority (where women are detained or in transit) sends
synthetic return notices to reception centres in Guatemala and Honduras. Each
country is a separate ``puente serve`` process with its own SQLite database
and its own mutual-TLS port on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from sqlalchemy import select

from node.core.config import AuthorityConfig, load_config
from node.core.logs import configure_logging
from node.delivery.outbox import queue_disclosure
from node.demo.audit_chapter import tell_audit_story
from node.demo.consent_chapter import tell_consent_story
from node.demo.local_federation import NodeSpec, build_local_federation
from node.demo.route_chapter import tell_route_story
from node.demo.synthetic import return_notice
from node.demo.users import provision_demo_users
from node.storage.context import NodeContext, open_node
from node.storage.models import Disclosure, ReceivedMessage
from node.wire.receipts import verify_receipt

FEDERATION = "puente-demo"


DEMO_NODES = (
    NodeSpec(
        "MX",
        "México",
        (
            AuthorityConfig(
                "mx-inm",
                "migration_authority",
                {
                    "es": "Instituto Nacional de Migración (demo)",
                    "en": "National Migration Institute (demo)",
                },
            ),
            AuthorityConfig(
                "mx-comar",
                "protection_agency",
                {
                    "es": "Comisión Mexicana de Ayuda a Refugiados (demo)",
                    "en": "Mexican Commission for Refugee Aid (demo)",
                },
            ),
        ),
    ),
    NodeSpec(
        "GT",
        "Guatemala",
        (
            AuthorityConfig(
                "gt-reception-la-aurora",
                "reception_centre",
                {
                    "es": "Centro de Recepción de Retornados, La Aurora (demo)",
                    "en": "Returnee Reception Centre, La Aurora (demo)",
                },
            ),
            AuthorityConfig(
                "gt-consulado-tapachula",
                "consulate",
                {
                    "es": "Consulado de Guatemala en Tapachula (demo)",
                    "en": "Consulate of Guatemala in Tapachula (demo)",
                },
            ),
            # The protection institution of the critical route (node.demo.route_chapter).
            AuthorityConfig(
                "gt-proteccion-victimas",
                "protection_agency",
                {
                    "es": "Instituto de la Víctima, protección de víctimas (demo)",
                    "en": "Victims' Institute, victim protection (demo)",
                    "fr": "Institut des victimes, protection des victimes (démo)",
                },
            ),
        ),
    ),
    NodeSpec(
        "HN",
        "Honduras",
        (
            AuthorityConfig(
                "hn-camr-sps",
                "reception_centre",
                {
                    "es": "Centro de Atención al Migrante Retornado, San Pedro Sula (demo)",
                    "en": "Returned Migrant Care Centre, San Pedro Sula (demo)",
                },
            ),
        ),
    ),
)
NOTICES = (("GT", "gt-reception-la-aurora", 3), ("HN", "hn-camr-sps", 2))


def build_federation(base: Path, now: dt.datetime) -> list[Path]:
    """Initialise every demo node and install a freshly signed directory."""
    return list(build_local_federation(base, DEMO_NODES, federation=FEDERATION, now=now).values())


def start_node(data_dir: Path) -> subprocess.Popen[bytes]:
    log_file = (data_dir / "serve.log").open("ab")
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "node.commands", "serve", "--dir", str(data_dir)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"node process exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


async def send_notices(mx: NodeContext, today: dt.date) -> list[str]:
    rng = random.Random(2026)  # noqa: S311 - synthetic data, not security
    ids = []
    serial = 1
    for node_id, authority, count in NOTICES:
        for _ in range(count):
            notice = return_notice(rng, destination=node_id, today=today, serial=serial)
            serial += 1
            row = await queue_disclosure(
                mx,
                sender_authority="mx-inm",
                recipient_node=node_id,
                recipient_authority=authority,
                doc_type="return_notice",
                body=notice,
            )
            ids.append(row.message_id)
    return ids


async def wait_delivered(mx: NodeContext, ids: list[str], patience: float) -> list[Disclosure]:
    deadline = time.monotonic() + patience
    while True:
        async with mx.sessions() as session:
            rows = list(
                (
                    await session.execute(
                        select(Disclosure)
                        .where(Disclosure.message_id.in_(ids))
                        .order_by(Disclosure.created_at)
                    )
                ).scalars()
            )
        if all(r.state not in ("queued", "sending") for r in rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def tell_story(base: Path, out: TextIO, patience: float) -> bool:
    """Send the notices, wait for receipts and print what happened. True if all receipted."""
    contexts = {spec.node_id: open_node(base / spec.node_id) for spec in DEMO_NODES}
    mx = contexts["MX"]
    try:
        print("\n== Puente demo: a federation of three member states ==", file=out)
        for spec in DEMO_NODES:
            ctx = contexts[spec.node_id]
            authority = spec.authorities[0]
            print(
                f"  {spec.node_id} {spec.name:<10} {ctx.config.public_url:<24} "
                f"{authority.id} ({authority.kind})",
                file=out,
            )
        print(
            f"  directory v{mx.directory.version}, signed by the federation operator, "
            f"digest {mx.directory.digest[:16]}…",
            file=out,
        )
        ids = await send_notices(mx, mx.now().date())
        print(f"\nMX queued {len(ids)} return notices (committed before sending):", file=out)
        rows = await wait_delivered(mx, ids, patience)
        ok = True
        for row in rows:
            print(
                f"\n  notice {row.message_id}  {row.sender_authority} -> "
                f"{row.recipient_node}/{row.recipient_authority}",
                file=out,
            )
            print(f"    case ref {row.case_ref}; fields sent: {', '.join(row.fields)}", file=out)
            print(
                f"    envelope {len(row.envelope)} bytes, JWE ECDH-ES+X25519/A256GCM around "
                f"a JWS Ed25519; sha256 {row.envelope_sha256[:16]}…",
                file=out,
            )
            if row.state != "delivered" or row.receipt is None:
                ok = False
                print(
                    f"    NOT DELIVERED: state {row.state}, last error {row.last_error}", file=out
                )
                continue
            receipt = verify_receipt(
                row.receipt,
                directory=mx.directory,
                expected_message_id=row.message_id,
                expected_recipient=row.recipient_node,
                expected_envelope_sha256=row.envelope_sha256,
            )
            stored = await _stored_at_recipient(contexts[row.recipient_node], row)
            if not stored:
                ok = False
            where = f"stored byte for byte at {row.recipient_node}" if stored else "MISSING"
            print(
                f"    receipt signed by {receipt.recipient.node} "
                f"(key {receipt.signing_kid[:12]}…), received {receipt.received_at.isoformat()}; "
                f"{where}",
                file=out,
            )
        ok = await tell_consent_story(contexts, out, patience) and ok
        ok = await tell_route_story(contexts, out, patience) and ok
        ok = await tell_audit_story(contexts, base, out) and ok
        delivered = sum(1 for r in rows if r.state == "delivered")
        print(
            f"\n{delivered}/{len(ids)} notices received and receipted. {'OK' if ok else 'FAILED'}",
            file=out,
        )
        return ok and delivered == len(ids)
    finally:
        for ctx in contexts.values():
            await ctx.close()


async def _stored_at_recipient(ctx: NodeContext, row: Disclosure) -> bool:
    async with ctx.sessions() as session:
        stored = (
            await session.execute(
                select(ReceivedMessage).where(
                    ReceivedMessage.sender_node == "MX",
                    ReceivedMessage.message_id == row.message_id,
                )
            )
        ).scalar_one_or_none()
    return stored is not None and stored.envelope == row.envelope.encode("ascii")


def run_demo(
    base: Path | None, *, once: bool, out: TextIO = sys.stdout, timeout: float = 60
) -> int:
    """Build (or reuse) the federation, run the nodes, tell the story. Returns an exit code."""
    # The story goes to ``out``; this process's own logs are JSON lines on stderr, and
    # only warnings (e.g. the demo's unprotected keys): the nodes log to serve.log.
    configure_logging("warning")
    if base is None:
        base = Path(tempfile.mkdtemp(prefix="puente-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"Demo federation directory: {base}", file=out)
    if not (base / "MX" / "puente.toml").exists():
        build_federation(base, dt.datetime.now(dt.UTC))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for spec in DEMO_NODES:
            data_dir = base / spec.node_id
            process = start_node(data_dir)
            processes.append(process)
            port = load_config(data_dir).port
            wait_for_port(port, process)
        ok = asyncio.run(tell_story(base, out, timeout))
        asyncio.run(provision_demo_users(base, out))
        print(
            f"Node logs: {base}/<country>/serve.log; databases: {base}/<country>/puente.db",
            file=out,
        )
        if not once:
            print("Nodes keep serving. Press Ctrl-C to stop.", file=out)
            with contextlib.suppress(KeyboardInterrupt):
                while all(p.poll() is None for p in processes):
                    time.sleep(0.5)
        return 0 if ok else 1
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
