"""Settings, read once from the environment into a frozen object.

Nothing reads ``os.environ`` after start-up: ``create_app(settings)`` gets
everything it needs from here, so tests build their own settings freely.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_WECHAT_API_BASE = "https://api.weixin.qq.com"
# ip2region's IPv4 database, shipped in the package (portal/data/README.md says where
# it comes from and how to refresh it).
DEFAULT_IP2REGION_XDB = str(Path(__file__).parent / "data" / "ip2region.xdb")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and why."""


_LIMIT_RE = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class Limit:
    count: int  # 0: no limit
    window: int = 60  # seconds

    @classmethod
    def parse(cls, text: str, name: str) -> Limit:
        """``COUNT/SECONDS`` (or ``COUNT`` per minute); ``0`` for no limit."""
        m = _LIMIT_RE.match(text)
        if not m or (m[2] is not None and int(m[2]) == 0):
            raise ValueError(f"{name} must be COUNT/SECONDS (e.g. 120/60) or 0, got {text!r}")
        return cls(int(m[1]), int(m[2] or 60))

    @property
    def off(self) -> bool:
        return self.count <= 0

    def __str__(self) -> str:
        return f"{self.count}/{self.window}"


DEFAULT_RATE_QR = Limit(120, 60)
DEFAULT_RATE_MP_SESSION = Limit(60, 60)
DEFAULT_RATE_TOKEN = Limit(600, 60)
# Issue 16: every path that makes a ticket, a QR image or a mini-program code is counted.
DEFAULT_RATE_QR_POOL = Limit(6000, 60)  # tickets per pool, from every address together
DEFAULT_RATE_QR_IMAGE = Limit(120, 60)  # QR images rendered per client IP and pool
DEFAULT_RATE_WXACODE = Limit(1000, 60)  # mini-program codes per pool (WeChat: 5000/min per AppID)
DEFAULT_RATE_MGMT = Limit(600, 60)  # management API calls per management client
DEFAULT_WAITERS_PER_IP = 100  # open SSE streams and long polls per client IP, per process


@dataclass(frozen=True)
class Settings:
    base_url: str = DEFAULT_BASE_URL
    database_url: str = ""
    redis_url: str = ""
    secret_key: str = ""
    env: str = "prod"
    data_dir: Path = Path(".portal")
    wechat_api_base: str = DEFAULT_WECHAT_API_BASE
    default_mp_appid: str = ""
    default_mp_secret: str = ""
    # An ip2region xdb file (IPv4): the province and city a login was started from,
    # looked up offline (issue 20). The packaged one by default; empty (the
    # environment's "off"): every location is "unknown".
    ip2region_xdb: str = DEFAULT_IP2REGION_XDB
    trusted_proxies: tuple[IPNetwork, ...] = ()
    db_pool_min: int = 1
    db_pool_max: int = 10
    redis_pool_max: int = 64
    # Seconds a cached pool (or a cached "no such pool") is trusted without
    # an invalidation message: a safety net should a pub/sub message be lost.
    pool_cache_ttl: float = 300.0
    # Webhooks (portal/webhooks): may an endpoint be on a loopback address (dev and
    # tests only; private and link-local addresses never), and after how many days
    # of nothing but failed deliveries an endpoint is disabled.
    webhooks_allow_loopback: bool = False
    webhooks_disable_after_days: int = 5
    # Rate limits (portal/stores/ratelimit.py): COUNT per WINDOW seconds; Limit(0) turns one off.
    rate_qr: Limit = DEFAULT_RATE_QR
    rate_mp_session: Limit = DEFAULT_RATE_MP_SESSION
    rate_token: Limit = DEFAULT_RATE_TOKEN
    rate_qr_pool: Limit = DEFAULT_RATE_QR_POOL
    rate_qr_image: Limit = DEFAULT_RATE_QR_IMAGE
    rate_wxacode: Limit = DEFAULT_RATE_WXACODE
    rate_mgmt: Limit = DEFAULT_RATE_MGMT
    waiters_per_ip: int = DEFAULT_WAITERS_PER_IP  # 0: no cap
    # Seconds a request body may take to arrive at a route that reads one; then 408.
    body_timeout: float = 30.0
    # Seconds RP-initiated logout waits for the first attempt of its back-channel
    # logout tokens before it redirects (0: not at all; portal/oidc/logout.py).
    backchannel_logout_wait: float = 1.5
    # The default mini program's one link rule is {qr_base}/q/ (issue 17); empty: the apex.
    qr_base: str = ""
    # Content security (issue 17): nicknames through msgSecCheck, avatars through
    # mediaCheckAsync (hidden until WeChat's pushed result passes them).
    content_security: bool = False
    qr_origin: str = field(init=False)  # qr_base normalized, or the apex's base_url
    scheme: str = field(init=False)
    apex_host: str = field(init=False)
    port: int | None = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"PORTAL_BASE_URL must be http(s)://host[:port], got {self.base_url!r}"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError("PORTAL_BASE_URL must not have a path, query or fragment")
        if self.env not in ("dev", "prod"):
            raise ConfigError(f"PORTAL_ENV must be 'dev' or 'prod', got {self.env!r}")
        if self.env == "prod" and len(self.secret_key) < 32:
            raise ConfigError(
                "PORTAL_SECRET_KEY is required in production (at least 32 characters)"
            )
        object.__setattr__(self, "scheme", parts.scheme)
        object.__setattr__(self, "apex_host", parts.hostname.lower())
        object.__setattr__(self, "port", parts.port)
        object.__setattr__(self, "base_url", f"{parts.scheme}://{self.apex_netloc}")
        qr = urlsplit(self.qr_base or self.base_url)
        if (
            qr.scheme not in ("http", "https")
            or not qr.hostname
            or qr.path not in ("", "/")
            or qr.query
            or qr.fragment
        ):
            raise ConfigError(f"PORTAL_QR_BASE must be http(s)://host[:port], got {self.qr_base!r}")
        qr_netloc = qr.hostname.lower() + ("" if qr.port is None else f":{qr.port}")
        object.__setattr__(self, "qr_origin", f"{qr.scheme}://{qr_netloc}")

    @property
    def apex_netloc(self) -> str:
        return self.apex_host if self.port is None else f"{self.apex_host}:{self.port}"

    @property
    def is_dev(self) -> bool:
        return self.env == "dev"

    def pool_url(self, slug: str) -> str:
        """The issuer and home of a pool: same scheme and port, on ``slug.<apex>``."""
        return f"{self.scheme}://{slug}.{self.apex_netloc}"

    @property
    def qr_host(self) -> str:
        """The host of the default mini program's link rule (served like the apex)."""
        return urlsplit(self.qr_origin).hostname or self.apex_host

    @property
    def qr_prefix(self) -> str:
        """The default mini program's one link rule: every pool it serves puts
        ``{qr_prefix}{ticket}`` in its QR codes."""
        return f"{self.qr_origin}/q/"

    def replace(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "base_url": env.get("PORTAL_BASE_URL", DEFAULT_BASE_URL),
            "database_url": env.get("DATABASE_URL", ""),
            "redis_url": env.get("REDIS_URL", ""),
            "secret_key": env.get("PORTAL_SECRET_KEY", ""),
            "env": env.get("PORTAL_ENV", "prod"),
            "data_dir": Path(env.get("PORTAL_DATA_DIR", ".portal")),
            "wechat_api_base": env.get("WECHAT_API_BASE", DEFAULT_WECHAT_API_BASE),
            "default_mp_appid": env.get("PORTAL_DEFAULT_MP_APPID", ""),
            "default_mp_secret": env.get("PORTAL_DEFAULT_MP_SECRET", ""),
            "ip2region_xdb": _xdb_path(env.get("PORTAL_IP2REGION_XDB", "")),
            "qr_base": env.get("PORTAL_QR_BASE", ""),
            "content_security": env.get("PORTAL_CONTENT_SECURITY", "").strip().lower()
            in ("1", "true", "yes", "on"),
            "trusted_proxies": parse_networks(env.get("PORTAL_TRUSTED_PROXIES", "")),
            "webhooks_allow_loopback": env.get("PORTAL_WEBHOOKS_ALLOW_LOOPBACK", "").strip().lower()
            in ("1", "true", "yes", "on"),
        }

        def integer(text: str, var: str) -> int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{var} must be an integer") from None

        def seconds(text: str, var: str) -> float:
            try:
                value = float(text)
            except ValueError:
                value = 0.0
            if not 0 < value <= 3600:
                raise ValueError(f"{var} must be a number of seconds (0 < s <= 3600)")
            return value

        def wait_seconds(text: str, var: str) -> float:
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if not 0 <= value <= 10:
                raise ValueError(f"{var} must be a number of seconds (0 <= s <= 10)")
            return value

        for name, var, parse in (
            ("body_timeout", "PORTAL_BODY_TIMEOUT", seconds),
            ("backchannel_logout_wait", "PORTAL_BACKCHANNEL_LOGOUT_WAIT", wait_seconds),
            ("db_pool_min", "PORTAL_DB_POOL_MIN", integer),
            ("db_pool_max", "PORTAL_DB_POOL_MAX", integer),
            ("redis_pool_max", "PORTAL_REDIS_POOL_MAX", integer),
            ("rate_qr", "PORTAL_RATE_QR", Limit.parse),
            ("rate_mp_session", "PORTAL_RATE_MP_SESSION", Limit.parse),
            ("rate_token", "PORTAL_RATE_TOKEN", Limit.parse),
            ("rate_qr_pool", "PORTAL_RATE_QR_POOL", Limit.parse),
            ("rate_qr_image", "PORTAL_RATE_QR_IMAGE", Limit.parse),
            ("rate_wxacode", "PORTAL_RATE_WXACODE", Limit.parse),
            ("rate_mgmt", "PORTAL_RATE_MGMT", Limit.parse),
            ("waiters_per_ip", "PORTAL_WAITERS_PER_IP", integer),
            ("webhooks_disable_after_days", "PORTAL_WEBHOOKS_DISABLE_AFTER_DAYS", integer),
        ):
            if var in env:
                try:
                    values[name] = parse(env[var], var)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _xdb_path(value: str) -> str:
    """PORTAL_IP2REGION_XDB: unset means the packaged database, "off" none."""
    value = value.strip()
    if not value:
        return DEFAULT_IP2REGION_XDB
    return "" if value.lower() in ("off", "none", "0", "false") else value


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"127.0.0.1, 10.0.0.0/8"`` → networks; a bad entry is a ConfigError."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"PORTAL_TRUSTED_PROXIES: {item!r} is not an IP address or network"
            ) from None
    return tuple(networks)


def dev_secret_key(data_dir: Path) -> str:
    """The dev master secret: generated once, kept in the data dir (mode 0600)."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
