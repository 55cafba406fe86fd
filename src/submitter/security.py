"""API keys and roles.

Keys are random 256-bit tokens, so a plain SHA-256 is enough to store them safely (no salt
or slow hash is needed against guessing; those protect low-entropy passwords). Only the
hash is stored; the key is shown once when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session, sessionmaker

from submitter.db.models import ApiKey
from submitter.db.types import utcnow
from submitter.roles import Role
from submitter.ttlcache import TTLCache, invalidate

KEY_PREFIX = "sk_"
KEYS_TOPIC = "api-keys"
KEY_TTL = 1.0
"""Seconds an API process trusts a key it has looked up: a key revoked in another process
(the CLI, another API worker) stops working within this long."""
BOOTSTRAP_ID = "bootstrap-admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the id is the owner recorded on jobs (scopes idempotency keys)."""

    id: str
    name: str
    role: Role


class ApiKeyError(Exception):
    """A key operation failed (duplicate name, unknown key)."""


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, role: Role) -> tuple[ApiKey, str]:
    """Create a key; return its row and the plaintext key (shown once)."""
    if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"a key named {name!r} exists")
    plaintext = generate_key()
    row = ApiKey(
        id=secrets.token_hex(8),
        name=name,
        role=role.value,
        key_hash=hash_key(plaintext),
        prefix=plaintext[:10],
    )
    session.add(row)
    session.flush()
    return row, plaintext


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, name_or_id: str) -> ApiKey:
    row = session.scalar(
        select(ApiKey).where((ApiKey.name == name_or_id) | (ApiKey.id == name_or_id))
    )
    if row is None:
        raise ApiKeyError(f"no key named {name_or_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    invalidate(KEYS_TOPIC)  # this process's API sees it at once; others within KEY_TTL
    return row


def authenticate(
    reads: sessionmaker[Session],
    writes: sessionmaker[Session],
    token: str,
    admin_key: str | None,
) -> Principal | None:
    """Return the principal for a bearer token, or None if it is not a valid key.

    A read, plus at most once a minute a short write of `last_used_at`: not a write (and,
    on SQLite, the write lock) on every request.
    """
    if admin_key and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Principal(id=BOOTSTRAP_ID, name="bootstrap admin", role=Role.admin)
    with reads() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(token)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        with writes() as session, session.begin():
            session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    return Principal(id=row.id, name=row.name, role=Role(row.role))


def key_cache() -> TTLCache[Principal]:
    """A per-app cache of `authenticate`'s answers for valid keys (see `KEY_TTL`)."""
    return TTLCache(KEYS_TOPIC, KEY_TTL)


def authenticate_cached(
    cache: TTLCache[Principal],
    reads: sessionmaker[Session],
    writes: sessionmaker[Session],
    token: str,
    admin_key: str | None,
) -> Principal | None:
    """`authenticate`, without a database read for a key seen in the last `KEY_TTL` s.

    An unknown or revoked key is not cached: it is looked up every time, as before.
    """
    digest = hash_key(token)
    hit, principal = cache.lookup(digest)
    if hit:
        return principal
    principal = authenticate(reads, writes, token, admin_key)
    if principal is not None:
        cache.store(digest, principal)
    return principal


def owner_role(connection: Connection, owner: str) -> Role | None:
    """The role of the key that owns a job or schedule now; None if revoked or unknown (a
    revoked owner's work runs with no role at all)."""
    if owner == BOOTSTRAP_ID:
        return Role.admin
    row = connection.execute(
        select(ApiKey.role, ApiKey.revoked_at).where(ApiKey.id == owner)
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    return Role(row.role)
