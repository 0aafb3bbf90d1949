"""The example website's backend (examples/rp) trusts no ID token it cannot verify.

The pool here is a stand-in serving a JWKS (httpx.MockTransport); the browser
tests run the same backend against a real portal."""

from __future__ import annotations

import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from examples.rp.app import Config, Refused, Verifier

ISSUER = "http://acme.localhost:8000"
CLIENT = "cexample"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})


@pytest.fixture
async def verifier():
    def jwks(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == f"{ISSUER}/oidc/jwks"
        return httpx.Response(200, json=KeySet([KEY]).as_dict(private=False))

    async with httpx.AsyncClient(transport=httpx.MockTransport(jwks)) as http:
        yield Verifier(Config(ISSUER, CLIENT, "http://localhost:8090"), http)


def token(key=KEY, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": CLIENT, "sub": "u1", "iat": now, "exp": now + 300, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": "k1"}, body, key)


async def test_a_good_token_from_the_qr_api(verifier):
    claims = await verifier.verify(token(nickname="Alice"), flow="sdk")
    assert claims["sub"] == "u1" and claims["nickname"] == "Alice"


@pytest.mark.parametrize(
    "bad",
    [
        {"iss": "http://evil.localhost:8000"},
        {"aud": "canother"},
        {"exp": int(time.time()) - 10},
        {"iat": int(time.time()) - 3600},  # QR API tokens have no nonce: must be fresh
        {"sub": None},
    ],
)
async def test_claims_are_checked(verifier, bad):
    with pytest.raises(Refused):
        await verifier.verify(token(**bad), flow="sdk")


async def test_the_signature_is_checked(verifier):
    with pytest.raises(Refused) as caught:
        await verifier.verify(token(OTHER_KEY), flow="sdk")
    assert caught.value.error == "invalid_token"
    with pytest.raises(Refused):
        await verifier.verify("not.a.token", flow="sdk")


async def test_oidc_flows_need_a_nonce_issued_here_once(verifier):
    with pytest.raises(Refused) as caught:
        await verifier.verify(token(nonce="made-up"), flow="popup")
    assert caught.value.error == "invalid_nonce"
    nonce = verifier.new_nonce()
    assert (await verifier.verify(token(nonce=nonce), flow="redirect"))["nonce"] == nonce
    with pytest.raises(Refused):  # the same nonce again, in a new token
        await verifier.verify(token(nonce=nonce, iat=int(time.time()) - 1), flow="redirect")


async def test_a_token_is_used_once(verifier):
    once = token()
    await verifier.verify(once, flow="component")
    with pytest.raises(Refused) as caught:
        await verifier.verify(once, flow="component")
    assert caught.value.error == "replayed_token"
