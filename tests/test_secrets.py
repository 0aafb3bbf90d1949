"""Secrets at rest: sealed or hashed, never stored in plaintext."""

import json

import pytest

from portal.stores.crypto import DecryptError, SecretBox
from portal.tenants import clients, keys, pools

MP_SECRET = "0123456789abcdef0123456789abcdef"


def test_sealed_values_are_bound_to_their_context_and_key(box, secret_key):
    sealed = box.encrypt(MP_SECRET, "pool:1:mp_secret")
    assert MP_SECRET.encode() not in sealed
    assert box.decrypt(sealed, "pool:1:mp_secret") == MP_SECRET.encode()
    assert box.encrypt(MP_SECRET, "pool:1:mp_secret") != sealed  # a fresh nonce every time
    with pytest.raises(DecryptError):
        box.decrypt(sealed, "pool:2:mp_secret")  # copied into another pool's row
    with pytest.raises(DecryptError):
        SecretBox(secret_key + "x").decrypt(sealed, "pool:1:mp_secret")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(DecryptError):
        box.decrypt(tampered, "pool:1:mp_secret")


async def test_nothing_secret_is_stored_in_plaintext(db, box):
    async with db.acquire() as conn:
        created = await pools.create(
            conn, box, slug="acme", name="Acme", mp_appid="wx1234567890abcdef", mp_secret=MP_SECRET
        )
    # Every byte of the database dump of these tables, searched for the secrets.
    dump = ""
    for table in ("pools", "clients", "signing_keys"):
        rows = await db.fetch(f"SELECT * FROM {table}")
        dump += repr([dict(r) for r in rows])
    assert MP_SECRET not in dump
    assert created.default_client_secret and created.default_client_secret not in dump
    private = await db.fetchrow("SELECT public_jwk, private_jwk_enc FROM signing_keys")
    assert "d" not in private["public_jwk"]  # the public JWK has no private exponent
    assert b'"d"' not in private["private_jwk_enc"]

    pool = await pools.get_by_slug(db, "acme")
    assert await pools.mp_secret(db, box, pool) == MP_SECRET
    async with db.acquire() as conn:
        key = await keys.active(conn, box, pool.id)
    assert key.key.as_dict(private=True)["d"]
    assert json.dumps(private["public_jwk"]).find(key.kid) > 0


async def test_client_secrets_verify_by_hash(db, box):
    async with db.acquire() as conn:
        created = await pools.create(conn, box, slug="acme", name="Acme")
    client, secret = created.default_client, created.default_client_secret
    assert clients.verify_secret(box, client, secret)
    assert not clients.verify_secret(box, client, secret + "x")
    assert not clients.verify_secret(box, client, "")
