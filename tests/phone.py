"""A WeChat user with the mini program, played over HTTP against a running portal.

It calls the portal's mini-program API exactly as the mini program does; the
portal in turn asks the fake WeChat server, which logs in ``USER`` for a
``wx.login`` code ``USER.<anything>``.
"""

from __future__ import annotations

import secrets

import httpx

from portal.wechat.fake import DEMO_APPID


class Phone:
    def __init__(self, client: httpx.AsyncClient, user: str, appid: str = DEMO_APPID) -> None:
        self.client = client  # an httpx client for the portal's apex (or any pool) host
        self.user = user
        self.appid = appid
        self.token: str | None = None

    @staticmethod
    def code(user: str) -> str:
        return f"{user}.{secrets.token_hex(4)}"

    async def login(self) -> httpx.Response:
        r = await self.client.post(
            "/api/mp/session", json={"appid": self.appid, "code": self.code(self.user)}
        )
        if r.status_code == 200:
            self.token = r.json()["session_token"]
        return r

    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    async def scan(self, ticket: str) -> httpx.Response:
        if self.token is None:
            (await self.login()).raise_for_status()
        return await self.client.post(f"/api/mp/tickets/{ticket}/scan", headers=self._auth())

    async def confirm(
        self, ticket: str, *, phone: str | None = None, **profile: str
    ) -> httpx.Response:
        body = dict(profile)
        if phone:
            body["phone_code"] = f"{phone}.{secrets.token_hex(4)}"
        return await self.client.post(
            f"/api/mp/tickets/{ticket}/confirm", json=body, headers=self._auth()
        )

    async def cancel(self, ticket: str) -> httpx.Response:
        return await self.client.post(f"/api/mp/tickets/{ticket}/cancel", headers=self._auth())

    async def scan_and_confirm(self, ticket: str, **kwargs) -> httpx.Response:
        r = await self.scan(ticket)
        if r.status_code != 200:
            return r
        return await self.confirm(ticket, **kwargs)
