"""The directory history in the database: record what was verified, find what was in force.

A receipt signed years ago by a key since rotated out of the federation is
checked against the directory this node held when it saw the receipt, not the
current one (docs/directory.md, "History").
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from node.storage.directory_models import DirectoryVersion
from node.storage.engine import create_engine, session_factory
from node.storage.migrate import upgrade_to_head
from node.storage.sessions import Sessions
from node.trust.acceptance import verify_held
from node.trust.directory import Directory, TrustRoot


async def record(sessions: Sessions, directory: Directory, *, seen_at: dt.datetime) -> bool:
    """Store a verified directory unless its version is already there. True if stored."""
    async with sessions() as session:
        if await session.get(DirectoryVersion, directory.version) is not None:
            return False
    try:
        async with sessions.begin() as session:
            session.add(
                DirectoryVersion(
                    version=directory.version,
                    federation=directory.federation,
                    digest=directory.digest,
                    issued_at=directory.issued_at,
                    expires_at=directory.expires_at,
                    first_seen_at=seen_at,
                    signed=json.dumps(dict(directory.signed), sort_keys=True),
                )
            )
    except IntegrityError:  # another task recorded it first
        return False
    return True


async def record_in_database(
    database_url: str, directory: Directory, *, seen_at: dt.datetime
) -> bool:
    """:func:`record` for a command that has no running node (``federation install``)."""
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
        return await record(session_factory(engine), directory, seen_at=seen_at)
    finally:
        await engine.dispose()


async def signed_version(sessions: Sessions, version: int) -> Mapping[str, Any] | None:
    """The signed directory with this version, exactly as it was verified."""
    async with sessions() as session:
        row = await session.get(DirectoryVersion, version)
    return json.loads(row.signed) if row is not None else None


async def list_versions(sessions: Sessions) -> list[DirectoryVersion]:
    """Every recorded version, oldest first."""
    async with sessions() as session:
        query = select(DirectoryVersion).order_by(DirectoryVersion.version)
        return list((await session.execute(query)).scalars())


async def directory_in_force(
    sessions: Sessions, trust_root: TrustRoot, at: dt.datetime
) -> Directory | None:
    """The newest directory this node had accepted by ``at`` (None if none yet).

    Its signatures are checked again against its own operator set, so a row
    edited behind the node's back does not verify anything.
    """
    async with sessions() as session:
        row = (
            await session.execute(
                select(DirectoryVersion)
                .where(DirectoryVersion.first_seen_at <= at)
                .order_by(DirectoryVersion.version.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
    if row is None:
        return None
    return verify_held(json.loads(row.signed), trust_root, now=at)
