"""Setting up a mini program's link rule, and checking a deployment's mini
program from our side (``portal mp ...``, docs/miniprogram.md's checklist).

The platform's default mini program serves every pool without a private one
under one rule, ``{PORTAL_QR_BASE}/q/``; a private mini program's rule is its
pool's prefix (``linkrules.prefix``). Publishing a rule makes WeChat fetch the
verification file it handed out from under the prefix, so the file is stored
(``mp_verify_files``) and served by every portal process first.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from portal.errors import NotFound, ValidationError
from portal.settings import Settings
from portal.stores.crypto import SecretBox
from portal.tenants import linkrules, pools
from portal.wechat.client import WeChatClient
from portal.wechat.errors import ErrCode, WeChatError, whitelist_ip

LOGIN_PAGE = "pages/login/index"
# WeChat's message push (content security results, scan/contentsec.py): a text
# callback, not the JSON API.
PUSH_PATH = "/wechat/push/{appid}"


def push_token(settings: Settings, appid: str) -> str:
    """The message push Token of mini program ``appid`` (32 characters, as WeChat allows)."""
    key = hashlib.sha256(("push-token:" + settings.secret_key).encode()).digest()
    return hmac.new(key, appid.encode(), hashlib.sha256).hexdigest()[:32]


def push_url(settings: Settings, appid: str) -> str:
    return settings.base_url + PUSH_PATH.format(appid=appid)


@dataclass(frozen=True)
class MiniProgram:
    appid: str
    secret: str
    prefix: str  # its link rule
    pool: str | None  # None: the platform's default mini program

    def file_urls(self, name: str) -> list[str]:
        """Where WeChat looks for the verification file: under the rule's last
        path segment, and at the host's root."""
        directory = self.prefix.rsplit("/", 1)[0] + "/"
        root = "/".join(self.prefix.split("/", 3)[:3]) + "/"
        return list(dict.fromkeys((directory + name, root + name)))


async def resolve(
    conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, box: SecretBox, slug: str | None
) -> MiniProgram:
    """The default mini program (``slug`` None), or pool ``slug``'s private one."""
    if slug is None:
        if not settings.default_mp_appid:  # (its secret is needed only to call WeChat)
            raise ValidationError(
                "PORTAL_DEFAULT_MP_APPID (and PORTAL_DEFAULT_MP_SECRET) are not set.",
                error="invalid_config",
            )
        return MiniProgram(
            settings.default_mp_appid, settings.default_mp_secret, settings.qr_prefix, None
        )
    pool = await pools.get_by_slug(conn, slug)
    if pool is None:
        raise NotFound(f"no pool with slug {slug!r}", error="pool_not_found")
    if pool.mp_appid is None:
        raise ValidationError(
            f"pool {slug!r} is served by the platform's default mini program: its link rule "
            "and verification file are the platform's (leave out --pool)",
            error="no_private_mini_program",
        )
    secret = await pools.mp_secret(conn, box, pool)
    return MiniProgram(pool.mp_appid, secret, linkrules.prefix(settings, pool), slug)


def describe(mp: MiniProgram, file: linkrules.VerifyFile | None) -> dict[str, Any]:
    return {
        "mp_appid": mp.appid,
        "pool": mp.pool,
        "prefix": mp.prefix,
        "page": LOGIN_PAGE,
        "verify_file": None if file is None else file.name,
        "verify_urls": [] if file is None else mp.file_urls(file.name),
    }


async def publish_rule(
    conn: asyncpg.Connection | asyncpg.Pool, wechat: WeChatClient, mp: MiniProgram
) -> dict[str, Any]:
    """Fetch the verification file from WeChat, store it (every process serves it
    at once), add the rule (kept if the mini program has it already) and publish
    it, which makes WeChat fetch the file from the running portal."""
    name, content = await wechat.link_verify_file(mp.appid, mp.secret)
    file = await linkrules.set_file(conn, mp.appid, name, content)
    try:
        await wechat.link_rule_add(mp.appid, mp.secret, mp.prefix, LOGIN_PAGE)
    except WeChatError as exc:
        if exc.errcode != ErrCode.LINK_EXISTS:
            raise
    await wechat.link_rule_publish(mp.appid, mp.secret, mp.prefix)
    return {**describe(mp, file), "published": True}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def json(self) -> dict[str, Any]:
        out = {"check": self.name, "ok": self.ok, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        return out


@dataclass
class Report:
    mp: MiniProgram
    checks: list[Check] = field(default_factory=list)
    push: dict[str, str] | None = None  # the message push URL and Token to enter

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def json(self) -> dict[str, Any]:
        return {
            "mp_appid": self.mp.appid,
            "pool": self.mp.pool,
            "prefix": self.mp.prefix,
            "ok": self.ok,
            "checks": [c.json() for c in self.checks],
            **({"message_push": self.push} if self.push else {}),
        }


async def _fetch(url: str, transport: httpx.AsyncBaseTransport | None) -> str | None:
    """GET ``url`` as WeChat's checker would (``*.localhost`` is loopback, RFC 6761)."""
    target = httpx.URL(url)
    host = target.host
    headers = {"host": target.netloc.decode()}
    if host == "localhost" or host.endswith(".localhost"):
        target = target.copy_with(host="127.0.0.1")
    try:
        async with httpx.AsyncClient(timeout=5, transport=transport) as client:
            r = await client.get(target, headers=headers)
    except httpx.HTTPError:
        return None
    return r.text.strip() if r.status_code == 200 else None


async def check(
    conn: asyncpg.Connection | asyncpg.Pool,
    settings: Settings,
    wechat: WeChatClient,
    mp: MiniProgram,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Report:
    """What can be checked from our side: the AppSecret works from this server
    (and its address is on the IP whitelist), the request domain, the link rule
    is published, the verification file is served where WeChat looks, and no
    phone-number quota errors lately."""
    report = Report(mp)
    if settings.content_security:  # 开发管理 → 消息推送: URL, Token, plain mode, JSON
        report.push = {"url": push_url(settings, mp.appid), "token": push_token(settings, mp.appid)}
    add = report.checks.append
    try:
        await wechat.check_credentials(mp.appid, mp.secret)
    except WeChatError as exc:
        if exc.errcode == ErrCode.IP_NOT_WHITELISTED:
            ip = whitelist_ip(exc.errmsg) or "this server's outgoing address"
            add(Check("ip_whitelist", False, f"WeChat refused {ip} (40164)",
                      f"add {ip} to the IP whitelist (开发管理 → 开发设置 → IP白名单)"))  # fmt: skip
        elif exc.errcode == -1:
            add(Check("credentials", False, "WeChat did not answer", "try again later"))
        else:
            add(Check("credentials", False, f"WeChat refused the AppID/AppSecret ({exc.errcode})",
                      "set the AppSecret again (开发管理 → 开发设置 → AppSecret)"))  # fmt: skip
        return report  # nothing else can be asked without a token
    add(Check("credentials", True, "the AppID and AppSecret work from this server"))
    add(Check("ip_whitelist", True, "this server may fetch access tokens"))

    # The mini program's API base is one host, the apex (docs/miniprogram.md).
    wanted = settings.base_url
    try:
        domains = await wechat.request_domains(mp.appid, mp.secret)
    except WeChatError as exc:
        add(Check("request_domain", False, f"could not read the server domains ({exc.errcode})",
                  f"check that {settings.base_url} is a request domain"))  # fmt: skip
    else:
        if wanted in domains.get("requestdomain", []):
            add(Check("request_domain", True, f"{wanted} is a request domain"))
        else:
            add(Check("request_domain", False, f"{wanted} is not a request domain",
                      f"add {wanted} to request合法域名 and uploadFile合法域名 "
                      "(开发管理 → 开发设置 → 服务器域名)"))  # fmt: skip

    try:
        rules = (await wechat.link_rules(mp.appid, mp.secret)).get("rule_list", [])
    except WeChatError as exc:
        rules = None
        add(Check("link_rule", False, f"could not read the link rules ({exc.errcode})",
                  "check 扫普通链接二维码打开小程序 in the mini program's admin"))  # fmt: skip
    if rules is not None:
        rule = next((r for r in rules if r.get("prefix") == mp.prefix), None)
        if rule is None:
            add(Check("link_rule", False, f"no link rule {mp.prefix}",
                      "run `portal mp publish-rule" + (f" --pool {mp.pool}`" if mp.pool else "`")
                      + f" or add the rule {mp.prefix} → {LOGIN_PAGE} by hand"))  # fmt: skip
        elif rule.get("state") != 2:
            add(Check("link_rule", False, f"the link rule {mp.prefix} is not published",
                      "publish it (its verification file must be served first)"))  # fmt: skip
        else:
            add(Check("link_rule", True, f"{mp.prefix} → {rule.get('path')} is published"))

    file = await linkrules.get_file(conn, mp.appid)
    try:  # the file WeChat hands out now: the one it will look for
        wanted_file = await wechat.link_verify_file(mp.appid, mp.secret)
    except WeChatError:
        wanted_file = None
    if file is not None and wanted_file is not None and (file.name, file.content) != wanted_file:
        add(Check("verify_file", False, f"{file.name} is not the file WeChat hands out ({wanted_file[0]})",
                  f"set it again: `portal mp verify-file {wanted_file[0]} --content ..."
                  + (f" --pool {mp.pool}`" if mp.pool else "`")))  # fmt: skip
    elif file is None:
        add(Check("verify_file", False, "no verification file is set",
                  "set it: `portal mp verify-file NAME --content CONTENT"
                  + (f" --pool {mp.pool}`" if mp.pool else "`")))  # fmt: skip
    else:
        bad = [u for u in mp.file_urls(file.name) if await _fetch(u, transport) != file.content]
        if bad:
            add(Check("verify_file", False, "not served at " + ", ".join(bad),
                      "check that the prefix's host reaches this portal"))  # fmt: skip
        else:
            add(
                Check(
                    "verify_file", True, f"{file.name} is served under the prefix and at the root"
                )
            )

    if mp.pool is not None:
        quota = await conn.fetchval(
            """SELECT coalesce(sum(c.calls), 0) FROM phone_calls c JOIN pools p ON p.id = c.pool_id
               WHERE p.slug = $1 AND c.outcome = 'quota' AND c.day > current_date - 7""",
            mp.pool,
        )
    else:
        quota = await conn.fetchval(
            """SELECT coalesce(sum(c.calls), 0) FROM phone_calls c JOIN pools p ON p.id = c.pool_id
               WHERE p.mp_appid IS NULL AND c.outcome = 'quota' AND c.day > current_date - 7"""
        )
    if quota:
        add(Check("phone_quota", False,
                  f"{quota} phone-number requests failed in the last 7 days: the quota is spent",
                  "buy more phone-number quota (小程序后台 → 基础功能 → 手机号快速验证组件)"))  # fmt: skip
    else:
        add(Check("phone_quota", True, "no phone-number quota errors in the last 7 days"))
    return report
