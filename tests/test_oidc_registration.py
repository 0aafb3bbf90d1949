"""What a relying party registers beyond its URIs (issue 18, item 4): response
types, PAR required, its public keys, back- and front-channel logout URIs,
through the console (Chinese and English, CSRF, another pool's admin refused)
and the CLI."""

from __future__ import annotations

import json

from joserfc.jwk import RSAKey

from portal.tenants import clients
from tests.test_console import World, as_a, world  # noqa: F401  (fixtures)

PUBLIC_JWKS = {"keys": [RSAKey.generate_key(2048, parameters={"kid": "k1"}).as_dict(private=False)]}


def oidc_form(**extra) -> dict:
    form = {"response_type": ["code", "code id_token"], "require_par": "on",
            "jwks": json.dumps(PUBLIC_JWKS), "jwks_uri": "",
            "backchannel_logout_uri": "https://a.example/backchannel",
            "frontchannel_logout_uri": "https://a.example/frontchannel"}  # fmt: skip
    form.update(extra)
    return form


async def test_the_console_registers_a_relying_partys_settings(world: World, as_a, db):  # noqa: F811
    path = f"/console/pools/alpha/clients/{world.a_client}"
    page = await as_a.get(path)
    assert page.status_code == 200 and 'id="oidc-form"' in page.text
    assert 'name="backchannel_logout_uri"' in page.text

    r = await as_a.post(path + "/oidc", data=oidc_form())
    assert r.status_code == 303, r.text
    client = await clients.get(db, world.a.pool.id, world.a_client)
    assert client.response_types == ("code", "code id_token") and client.require_par
    assert client.jwks == PUBLIC_JWKS and client.jwks_uri is None
    assert client.backchannel_logout_uri == "https://a.example/backchannel"
    assert client.frontchannel_logout_uri == "https://a.example/frontchannel"
    page = await as_a.get(path)
    assert (
        "https://a.example/backchannel" in page.text
        and 'value="code id_token" checked' in page.text
    )

    # Bad input is shown again with the reason, in the admin's language; nothing saved.
    private = {"keys": [RSAKey.generate_key(2048).as_dict(private=True)]}
    cases = [
        ({"response_type": []}, "response type"),
        ({"jwks": json.dumps(private)}, "public keys only"),
        ({"jwks": "{"}, "JWK Set"),
        ({"jwks_uri": "https://a.example/jwks"}, "not both"),
        ({"backchannel_logout_uri": "javascript:alert(1)"}, "javascript:alert(1)"),
        ({"frontchannel_logout_uri": "http://a.example/front"}, "http://a.example/front"),
    ]
    for change, text in cases:
        r = await as_a.post(
            path + "/oidc", data=oidc_form(**change), headers={"accept-language": "en"}
        )
        assert r.status_code == 400, change
        assert text in r.text, (change, text)
        assert 'aria-invalid="true"' in r.text
    r = await as_a.post(path + "/oidc", data=oidc_form(response_type=[]), params={"lang": "zh-CN"})
    assert r.status_code == 400 and "至少选择一种 response_type" in r.text
    assert await clients.get(db, world.a.pool.id, world.a_client) == client

    # Clearing: keys by URL instead, no logout URIs, code only.
    r = await as_a.post(path + "/oidc", data=oidc_form(
        response_type=["code"], require_par="", jwks="", jwks_uri="https://a.example/jwks",
        backchannel_logout_uri="", frontchannel_logout_uri=""))  # fmt: skip
    assert r.status_code == 303
    cleared = await clients.get(db, world.a.pool.id, world.a_client)
    assert (cleared.response_types, cleared.require_par, cleared.jwks, cleared.jwks_uri) == (
        ("code",),
        False,
        None,
        "https://a.example/jwks",
    )
    assert cleared.backchannel_logout_uri is None and cleared.frontchannel_logout_uri is None


async def test_the_console_form_needs_csrf_and_the_pools_own_admin(world: World, as_a, db):  # noqa: F811
    before = await clients.get(db, world.b.pool.id, world.b_client)
    # Another pool's client: 404, nothing changed.
    r = await as_a.post(f"/console/pools/bravo/clients/{world.b_client}/oidc", data=oidc_form())
    assert r.status_code == 404
    r = await as_a.post(f"/console/pools/alpha/clients/{world.b_client}/oidc", data=oidc_form())
    assert r.status_code == 404
    # No CSRF token: refused.
    r = await as_a.http.post(
        f"/console/pools/alpha/clients/{world.a_client}/oidc", data=oidc_form()
    )
    assert r.status_code in (400, 403)
    assert (await clients.get(db, world.a.pool.id, world.a_client)).require_par is False
    assert await clients.get(db, world.b.pool.id, world.b_client) == before


def test_the_cli_registers_them_too(portal_cli, tmp_path):
    r = portal_cli("pool", "create", "shop", "--name", "Shop")
    assert r.returncode == 0, r.stderr
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(PUBLIC_JWKS))
    r = portal_cli(
        "client", "create", "shop", "--name", "Site", "--redirect-uri", "https://site.example/cb",
        "--response-type", "code", "id_token", "--require-par", "--jwks", f"@{jwks_file}",
        "--backchannel-logout-uri", "https://site.example/bc",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["response_types"] == ["code", "id_token"]
    assert made["require_pushed_authorization_requests"] is True
    assert (
        made["jwks"] == PUBLIC_JWKS and made["backchannel_logout_uri"] == "https://site.example/bc"
    )
    r = portal_cli("client", "set", "shop", made["client_id"], "--no-require-par",
                   "--jwks-uri", "https://site.example/jwks",
                   "--frontchannel-logout-uri", "https://site.example/fc")  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["require_pushed_authorization_requests"] is False and got["jwks"] is None
    assert got["jwks_uri"] == "https://site.example/jwks"
    assert got["backchannel_logout_uri"] == "https://site.example/bc"  # kept
    for bad in (["--response-type", "token"], ["--jwks-uri", "http://site.example/jwks"],
                ["--jwks", "{}"]):  # fmt: skip
        r = portal_cli("client", "set", "shop", made["client_id"], *bad)
        assert r.returncode != 0, bad
    r = portal_cli("client", "set", "shop", "cnosuchclient", "--require-par")
    assert r.returncode != 0
