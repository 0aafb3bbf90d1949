"""Benchmark 4: the token endpoint, refresh grants per second, RS256 and ES256.

N users each log in once (a whole scan login through the QR API, whose
exchange issues a refresh token for the pool's default client), then loop on
``POST /oidc/token`` with ``grant_type=refresh_token`` (client_secret_basic),
always presenting the newest refresh token (each grant rotates it: one row
updated, one inserted, two JWTs signed). After a warm-up, grants that finish
inside the measured window count. Then the pool switches to ES256 (``UPDATE``
+ ``portal keys rotate``, which tells every process) and the same runs again.
"""

from __future__ import annotations

import asyncio
import base64
import time
from urllib.parse import urlencode

from common import create_ticket, exchange, expect, mp_session, scan
from loadclient import Connection
from metrics import CpuMeter, format_cpu, summary_ms
from stack import LOOPBACK, POOL_SLUG, Stack


async def _login(stack: Stack, k: int) -> str:
    browser = Connection(LOOPBACK, stack.port, stack.pool_host)
    phone = Connection(LOOPBACK, stack.port, stack.apex_host)
    try:
        ticket, secret = await create_ticket(browser)
        token = await mp_session(phone, f"tok{k}")
        await scan(phone, ticket, token)
        r = await phone.request(
            "POST",
            f"/api/mp/tickets/{ticket}/confirm",
            json_body={},
            headers={"Authorization": f"Bearer {token}"},
        )
        expect("confirm", r, 200)
        return (await exchange(browser, ticket, secret))["refresh_token"]
    finally:
        browser.close()
        phone.close()


async def _grants(stack: Stack, alg: str, *, users: int, seconds: float, warmup: float) -> dict:
    client_id, secret = stack.pool["default_client_id"], stack.pool["default_client_secret"]
    auth = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    refresh = await asyncio.gather(*(_login(stack, k) for k in range(users)))
    t_start = time.monotonic()
    w0, w1 = t_start + warmup, t_start + warmup + seconds
    done: list[float] = []
    errors: list[str] = []
    signed_with: set[str] = set()

    async def user(k: int) -> None:
        conn = Connection(LOOPBACK, stack.port, stack.pool_host)
        token = refresh[k]
        try:
            while time.monotonic() < w1:
                t0 = time.monotonic()
                body = urlencode({"grant_type": "refresh_token", "refresh_token": token}).encode()
                r = await conn.request(
                    "POST", "/oidc/token", body=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": auth},
                )  # fmt: skip
                if r.status != 200:
                    errors.append(f"{r.status} {r.body[:80]!r}")
                    return
                answer = r.json()
                token = answer["refresh_token"]
                signed_with.add(_alg(answer["id_token"]))
                t1 = time.monotonic()
                if w0 <= t1 < w1:
                    done.append(t1 - t0)
        finally:
            conn.close()

    meter = CpuMeter(stack.process_groups)
    await asyncio.sleep(max(0.0, w0 - time.monotonic()))
    meter.start()
    await asyncio.gather(*(user(k) for k in range(users)))
    cpu = meter.stop()
    return {
        "alg": alg,
        "users": users,
        "grants_per_s": round(len(done) / seconds, 1),
        "latency_ms": summary_ms(done),
        "errors": len(errors),
        "error_samples": errors[:3],
        "signed_with": sorted(signed_with),
        "cpu_cores": cpu,
        "cpu": format_cpu(cpu),
    }


def _alg(jwt: str) -> str:
    import json

    head = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["alg"]


async def run(stack: Stack, *, users: int, seconds: float, warmup: float) -> dict:
    print(
        f"Token endpoint: {users} users refreshing, {seconds:.0f}s after {warmup:.0f}s, RS256 then ES256",
        flush=True,
    )
    rs = await _grants(stack, "RS256", users=users, seconds=seconds, warmup=warmup)
    await stack._sql(
        stack.db_url, f"UPDATE pools SET id_token_alg = 'ES256' WHERE slug = '{POOL_SLUG}'"
    )
    await asyncio.to_thread(stack._run_cli, "keys", "rotate", POOL_SLUG)
    await asyncio.sleep(0.5)  # the rotation's message reaches every worker
    es = await _grants(stack, "ES256", users=users, seconds=seconds, warmup=warmup)
    return {"RS256": rs, "ES256": es}
