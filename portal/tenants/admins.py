"""Console administrators and the pools they belong to."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from portal.errors import Conflict, NotFound, ValidationError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# argon2 costs ~0.2 s of CPU and 64 MiB a hash, by design. On the event loop it
# would stall every request of the process (a sign-in storm held POST
# /api/qrcode for seconds, issue 16), so async callers hash on these threads
# (argon2-cffi releases the GIL): one hash at a time per process, already
# spread over ``parallelism`` lanes, so a storm costs at most that much CPU.
HASH_THREADS = 1


def _yield_to_the_event_loop() -> None:
    """The hashing thread runs at the lowest CPU priority (nice 19), and so do
    the lane threads argon2 starts from it: on a busy machine the event loop
    (nice 0) gets the core first. Linux only: there a thread has its own nice."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


_hashing = ThreadPoolExecutor(
    max_workers=HASH_THREADS, thread_name_prefix="argon2", initializer=_yield_to_the_event_loop
)
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


async def hash_password_async(password: str) -> str:
    """``hash_password`` off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_hashing, hash_password, password)


async def verify_password(password_hash: str, password: str) -> bool:
    """``check_password`` off the event loop, one at a time per process."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_hashing, check_password, password_hash, password)


async def create(
    conn: asyncpg.Connection,
    *,
    email: str,
    password: str,
    superadmin: bool = False,
    pool_slugs: list[str] | None = None,
) -> tuple[Admin, list[str]]:
    email = normalize_email(email)
    password_hash = await hash_password_async(password)
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
