"""Users of the local API and their bearer tokens.

A token is ``pnt_<id>_<secret>``: the id finds the row, the secret (256
random bits) is stored only as its SHA-256 and compared in constant time.
Tokens expire and can be revoked; the last use is recorded (at most once a
minute, so reading does not turn every request into a write). Designed so an
OpenID Connect provider can later map its subjects to the same users.

A username is stored, compared and logged in one form (:func:`normalize_username`):
NFKC, then the RFC 8265 ``UsernameCaseMapped`` profile with case folding, so
``JOSÉ.PÉREZ``, ``ｊｏｓé.pérez`` and ``josé.pérez`` are one user and a
look-alike cannot be created beside it; control and format characters,
spaces and mixed scripts are refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

import precis_i18n
from confusable_homoglyphs import confusables
from sqlalchemy import select

from node.auditlog import entries as audit
from node.core.errors import PuenteError
from node.storage.api_models import ApiToken, User
from node.storage.context import NodeContext

TOKEN_PREFIX = "pnt"  # noqa: S105 - a public marker, not a secret
DEFAULT_TOKEN_LIFETIME = dt.timedelta(days=30)
LAST_USE_GRANULARITY = dt.timedelta(minutes=1)
USERNAME_LENGTH = (2, 63)
_USERNAME_PROFILE = precis_i18n.get_profile("UsernameCaseMapped:CaseFold")
_USERNAME_PUNCTUATION = frozenset("._-")
_AUTHORITY = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_TOKEN = re.compile(r"^pnt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class Role(StrEnum):
    CASEWORKER = "caseworker"
    RECEPTION_OFFICER = "reception_officer"
    AUDITOR = "auditor"
    ADMIN = "admin"


# Which authority kinds a role may belong to. Auditors and admins belong to an
# oversight body or the node's operator, which are not federation authorities.
_ROLE_AUTHORITY_KINDS = {
    Role.CASEWORKER: {"consulate", "migration_authority", "protection_agency"},
    Role.RECEPTION_OFFICER: {"reception_centre", "protection_agency"},
}


class AuthError(PuenteError):
    """The request does not carry a valid token; ``user`` names its owner if the token was real."""

    reason = "unauthenticated"
    http_status = 401

    def __init__(self, reason: str, detail: str, *, user: str | None = None) -> None:
        super().__init__(reason, detail)
        self.user = user


class UserError(PuenteError):
    """A user or token operation is refused."""

    reason = "bad_user"
    http_status = 422


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""

    user_id: int
    username: str
    role: Role
    authority: str
    token_id: str


def normalize_username(raw: str) -> str:
    """The one form of a username, or :class:`UserError` ``bad_username`` saying what is wrong.

    NFKC folds compatibility forms (full-width letters, ligatures), the RFC 8265
    profile folds case and refuses controls, spaces and invisible characters.
    What is left may hold letters and digits of one script, and ``. _ -``
    (never first), 2 to 63 characters.
    """
    low, high = USERNAME_LENGTH
    if len(raw) > 4 * high:
        raise UserError("bad_username", f"at most {high} characters")
    try:
        name = _USERNAME_PROFILE.enforce(unicodedata.normalize("NFKC", raw))
    except UnicodeEncodeError as exc:
        what = str(exc.reason).split("/")[-1].replace("_", " ")
        raise UserError(
            "bad_username", f"character {exc.start + 1} is not allowed in a username ({what})"
        ) from exc
    if not low <= len(name) <= high:
        raise UserError("bad_username", f"{low} to {high} characters")
    for position, char in enumerate(name, start=1):
        if not (char.isalnum() or (position > 1 and char in _USERNAME_PUNCTUATION)):
            raise UserError(
                "bad_username",
                f"character {position} is not allowed: letters, digits, and . _ - after the first",
            )
    if confusables.is_mixed_script(name):
        raise UserError("bad_username", "letters of one script only (look-alikes are refused)")
    return name


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


async def create_user(ctx: NodeContext, *, username: str, role: str, authority: str) -> User:
    """Create a user (its name in normal form), checking the role fits the authority's kind."""
    username = normalize_username(username)
    try:
        role_value = Role(role)
    except ValueError as exc:
        raise UserError("bad_role", f"role must be one of {', '.join(Role)}") from exc
    if not _AUTHORITY.match(authority):
        raise UserError("bad_authority", "authority ids are lower-case letters, digits and -")
    allowed_kinds = _ROLE_AUTHORITY_KINDS.get(role_value)
    if allowed_kinds is not None:
        own = ctx.directory.node(ctx.node_id)
        served = own.authorities.get(authority) if own else None
        if served is None:
            raise UserError("unknown_authority", f"{authority} is not served by this node")
        if served.kind not in allowed_kinds:
            raise UserError(
                "role_authority_mismatch", f"a {role_value} cannot belong to a {served.kind}"
            )
    now = ctx.now()
    async with ctx.sessions.begin() as session:
        existing = await session.execute(select(User).where(User.username == username))
        if existing.scalar_one_or_none() is not None:
            raise UserError("user_exists", f"user {username} already exists")
        user = User(username=username, role=role_value.value, authority=authority, created_at=now)
        session.add(user)
        await session.flush()
        await audit.append(
            session,
            node=ctx.node_id,
            event="user.created",
            at=now,
            user=username,
            role=role_value.value,
            authority=authority,
        )
    return user


async def issue_token(
    ctx: NodeContext, username: str, *, lifetime: dt.timedelta = DEFAULT_TOKEN_LIFETIME
) -> tuple[str, ApiToken]:
    """A new bearer token for a user. The secret is shown once and never stored."""
    username = normalize_username(username)
    now = ctx.now()
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    async with ctx.sessions.begin() as session:
        user = (
            await session.execute(select(User).where(User.username == username))
        ).scalar_one_or_none()
        if user is None or user.disabled_at is not None:
            raise UserError("unknown_user", f"no active user {username}")
        row = ApiToken(
            id=token_id,
            user_id=user.id,
            secret_sha256=_hash(secret),
            created_at=now,
            expires_at=now + lifetime,
        )
        session.add(row)
        await audit.append(
            session,
            node=ctx.node_id,
            event="token.issued",
            at=now,
            user=username,
            token_id=token_id,
            expires_at=row.expires_at.isoformat(),
        )
    return f"{TOKEN_PREFIX}_{token_id}_{secret}", row


async def revoke_token(ctx: NodeContext, token_id: str) -> None:
    now = ctx.now()
    async with ctx.sessions.begin() as session:
        row = await session.get(ApiToken, token_id)
        if row is None:
            raise UserError("unknown_token", f"no token {token_id}")
        if row.revoked_at is None:
            row.revoked_at = now
            await audit.append(
                session, node=ctx.node_id, event="token.revoked", at=now, token_id=token_id
            )


async def list_users(ctx: NodeContext) -> list[tuple[User, list[ApiToken]]]:
    async with ctx.sessions() as session:
        users = (await session.execute(select(User).order_by(User.username))).scalars().all()
        tokens = (await session.execute(select(ApiToken).order_by(ApiToken.created_at))).scalars()
        by_user: dict[int, list[ApiToken]] = {}
        for token in tokens:
            by_user.setdefault(token.user_id, []).append(token)
    return [(u, by_user.get(u.id, [])) for u in users]


async def authenticate(ctx: NodeContext, authorization: str | None) -> Principal:
    """The principal for an ``Authorization: Bearer`` header, or an AuthError."""
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthError("missing_token", "send Authorization: Bearer <token>")
    match = _TOKEN.match(authorization.removeprefix("Bearer ").strip())
    if match is None:
        raise AuthError("invalid_token", "not a Puente token")
    token_id, secret = match.groups()
    now = ctx.now()
    async with ctx.sessions() as session:
        # One statement: this runs on every API request.
        found = (
            await session.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
            )
        ).first()
    token, user = (found[0], found[1]) if found is not None else (None, None)
    if token is None or user is None or not hmac.compare_digest(token.secret_sha256, _hash(secret)):
        raise AuthError("invalid_token", "unknown token")
    if token.revoked_at is not None:
        raise AuthError("token_revoked", "this token was revoked", user=user.username)
    if token.expires_at <= now:
        raise AuthError("token_expired", "this token has expired", user=user.username)
    if user.disabled_at is not None:
        raise AuthError("user_disabled", "this user is disabled", user=user.username)
    if token.last_used_at is None or now - token.last_used_at > LAST_USE_GRANULARITY:
        async with ctx.sessions.begin() as session:
            stored = await session.get(ApiToken, token_id)
            if stored is not None:
                stored.last_used_at = now
    return Principal(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        authority=user.authority,
        token_id=token_id,
    )
