"""``portal client create SLUG --management --scope ...``: a management client from
the command line, whose secret works at once for the management API with exactly
its scopes (a real subprocess, then the API over real HTTP)."""

from __future__ import annotations

import json


async def test_cli_creates_a_management_client(portal_cli, portal, db):
    assert portal_cli("pool", "create", "acme", "--name", "Acme").returncode == 0
    r = portal_cli("client", "create", "acme", "--management", "--name", "Back office",
                   "--scope", "users:read", "logins:read")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["management"] is True and out["scopes"] == ["users:read", "logins:read"]
    assert out["pool"] == "acme" and len(out["client_secret"]) >= 40
    async with portal.client("acme") as http:
        r = await http.post(
            "/oidc/token",
            data={"grant_type": "client_credentials"},
            auth=(out["client_id"], out["client_secret"]),
        )
        assert r.status_code == 200 and r.json()["scope"] == "users:read logins:read"
        bearer = {"authorization": f"Bearer {r.json()['access_token']}"}
        assert (await http.get("/api/v1/users", headers=bearer)).status_code == 200
        assert (await http.get("/api/v1/clients", headers=bearer)).status_code == 403
    row = await db.fetchrow(
        "SELECT actor_type, action FROM audit_log WHERE target = $1", out["client_id"]
    )
    assert dict(row) == {"actor_type": "cli", "action": "client.create"}

    # Refused, nothing written: no scope, an unknown scope, redirect URIs on a
    # management client, an application client without redirect URIs.
    for args in (
        ("--management",),
        ("--management", "--scope", "openid"),
        ("--management", "--scope", "users:read", "--redirect-uri", "https://x.example.com/"),
        ("--management", "--scope", "users:read", "--public"),
        (),
        ("--scope", "users:read", "--redirect-uri", "https://x.example.com/"),
    ):
        r = portal_cli("client", "create", "acme", "--name", "Bad", *args)
        assert r.returncode == 2, (args, r.stdout)
        assert r.stderr.startswith("portal: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert await db.fetchval("SELECT count(*) FROM clients WHERE name = 'Bad'") == 0
