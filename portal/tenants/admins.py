"""Console administrators and the pools they belong to."""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from portal.errors import Conflict, NotFound, ValidationError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 10


@dataclass(frozen=True)
class Admin:
    id: int
    email: str
    is_superadmin: bool


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL_RE.match(email):
        raise ValidationError(f"{email!r} is not a valid email address", error="invalid_email")
    return email


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(
            f"the password must be at least {MIN_PASSWORD} characters", error="weak_password"
        )
    if len(password) > 1024:
        raise ValidationError("the password is too long", error="weak_password")
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def create(
    conn: asyncpg.Connection,
    *,
    email: str,
    password: str,
    superadmin: bool = False,
    pool_slugs: list[str] | None = None,
) -> tuple[Admin, list[str]]:
    email = normalize_email(email)
    password_hash = hash_password(password)
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                """INSERT INTO admins (email, password_hash, is_superadmin) VALUES ($1, $2, $3)
                   RETURNING id, email, is_superadmin""",
                email,
                password_hash,
                superadmin,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"an admin with email {email!r} already exists", error="admin_exists"
            ) from None
        admin = Admin(**dict(row))
        slugs: list[str] = []
        for slug in pool_slugs or []:
            pool_id = await conn.fetchval("SELECT id FROM pools WHERE slug = $1", slug)
            if pool_id is None:
                raise NotFound(f"no pool with slug {slug!r}", error="pool_not_found")
            await conn.execute(
                "INSERT INTO pool_admins (pool_id, admin_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                pool_id,
                admin.id,
            )
            slugs.append(slug)
    return admin, slugs
