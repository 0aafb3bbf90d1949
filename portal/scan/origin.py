"""Where a scan login was started, and how its QR code reached the phone (issue 20).

A QR code forwarded to someone else (a screenshot in a chat, a look-alike page)
logs its creator in when that someone confirms: the confirm screen therefore
shows where the login was started (browser and OS, approximate place, website,
how long ago), and the launch scene the mini program reports tells a camera
scan from a long-press in an image.

Nothing here runs when a ticket is made, the hot path: ``device_of`` is a few
substring tests, and the raw User-Agent and address are kept in the ticket. They
are parsed (ua-parser) and located (an ip2region xdb file, offline) only when
someone scans it, and a User-Agent is parsed once per process.

How the scene and the ticket's device decide (the scan script in tickets.py):

| scene kind | made in WeChat's browser | on a phone browser | on a computer |
|---|---|---|---|
| camera (1011, 1047) | ok | ok | ok |
| image or album (1012, 1013, 1048, 1049) | ok (the long-press flow) | warned / refused | warned / refused |
| link (1065, 1194, 1286, 1167) | warned | ok (the "Open WeChat" flow) | warned |
| none or another | unknown | unknown | unknown |

"warned / refused" follows the pool's ``scan_source_policy``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time

from portal.scan.tickets import Origin

log = logging.getLogger(__name__)

CAMERA_SCENES = frozenset({1011, 1047})  # scanned with the camera: a QR code, a mini-program code
IMAGE_SCENES = frozenset({1012, 1013, 1048, 1049})  # long-press in an image, or the album
# URL Scheme (1065), URL Link (1194), plain-text URL Scheme (1286), a web page's
# open tag (1167): opened from a link on the phone itself.
LINK_SCENES = frozenset({1065, 1194, 1286, 1167})
KNOWN_SCENES = CAMERA_SCENES | IMAGE_SCENES | LINK_SCENES

_MOBILE_MARKS = ("Mobile", "Android", "iPhone", "iPad", "HarmonyOS")


def scene_kind(scene: int | None) -> str:
    if scene in CAMERA_SCENES:
        return "camera"
    if scene in IMAGE_SCENES:
        return "image"
    if scene in LINK_SCENES:
        return "link"
    return ""


def device_of(user_agent: str) -> str:
    """'wechat' (WeChat's own browser), 'mobile' (another phone browser) or 'pc'
    (a computer, or no User-Agent at all): substring tests, cheap enough for
    every ticket."""
    if "MicroMessenger" in user_agent:
        return "wechat"
    if any(mark in user_agent for mark in _MOBILE_MARKS):
        return "mobile"
    return "pc"


@functools.lru_cache(maxsize=4096)
def browser_and_os(user_agent: str) -> tuple[str, str]:
    """("Chrome", "Windows"), or ("", "") for what the parser does not know."""
    if not user_agent:
        return "", ""
    from ua_parser import parse  # compiles its rules on first use: only if someone scans

    result = parse(user_agent)
    browser = result.user_agent.family if result.user_agent else ""
    system = result.os.family if result.os else ""
    if browser == "Other":
        browser = ""
    if system == "Other":
        system = ""
    if browser == "WeChat Browser":
        browser = "WeChat"
    if system == "Mac OS X":
        system = "macOS"
    return browser, system


class Locator:
    """The province and city of an IPv4 address from an ip2region xdb file,
    loaded into memory once (about 11 MB for the full database); None for
    private, loopback and unknown addresses, and for every address without a file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._searcher = None
        self._lock = threading.Lock()
        self._failed = not path

    def _load(self):
        with self._lock:
            if self._searcher is None and not self._failed:
                try:
                    import ip2region.searcher as xdb
                    import ip2region.util as util

                    with open(self.path, "rb") as f:
                        content = f.read()
                    header = util.Header(content[: util.HeaderInfoLength])
                    version = util.version_from_header(header) or util.IPv4
                    self._searcher = xdb.new_with_buffer(version, content)
                except (OSError, ValueError, ImportError) as exc:
                    log.warning("ip2region database %s not usable (%s)", self.path, exc)
                    self._failed = True
        return self._searcher

    def locate(self, ip: str) -> str | None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global:
            return None  # private, loopback, link-local, reserved: "unknown"
        searcher = self._searcher or self._load()
        if searcher is None or searcher.version.byte_num != len(address.packed):
            return None
        try:
            region = searcher.search(address.packed)
        except (ValueError, IndexError):
            return None
        return _place(region)


_SUFFIXES = ("特别行政区", "维吾尔自治区", "壮族自治区", "回族自治区", "自治区", "省", "市")


def _place(region: str) -> str | None:
    """ip2region's "中国|广东省|深圳市|电信|CN" (or the older "中国|0|广东省|深圳市|电信")
    → "广东 深圳"; abroad, its country and region as the database has them."""
    fields = region.split("|") + [""] * 5
    if fields[4].isascii() and len(fields[4]) == 2 and fields[4].isupper():
        country, province, city = fields[0], fields[1], fields[2]  # Country|Province|City|ISP|ISO
    else:
        country, province, city = (
            fields[0],
            fields[2],
            fields[3],
        )  # Country|Region|Province|City|ISP
    known = [p for p in (province, city) if p and p != "0"]
    if country != "中国":
        return " ".join(dict.fromkeys(p for p in (country, *known) if p and p != "0")) or None
    names: list[str] = []
    for part in known:
        for suffix in _SUFFIXES:
            if part.endswith(suffix) and len(part) > len(suffix):
                part = part[: -len(suffix)]
                break
        if part not in names:
            names.append(part)
    return " ".join(names) or country


_LOCATORS: dict[str, Locator] = {}


def locator(path: str) -> Locator:
    if path not in _LOCATORS:
        _LOCATORS[path] = Locator(path)
    return _LOCATORS[path]


def describe(origin: Origin, *, xdb: str, client_name: str | None, now_ms: int | None = None):
    """The confirm screen's "where this login was started", as JSON: each part
    may be null (not known); the mini program words them in its language."""
    browser, system = browser_and_os(origin.user_agent)
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    ago = max(0, (now_ms - origin.created_ms) // 1000) if origin.created_ms else None
    return {
        "browser": browser or None,
        "os": system or None,
        "device": device_of(origin.user_agent) if origin.user_agent else None,
        "location": locator(xdb).locate(origin.ip) if origin.ip else None,
        "site": origin.site or None,
        "client": client_name,
        "started_s_ago": ago,
    }


def summary(context: dict) -> str:
    """One line for the login log: "Chrome on Windows · 广东 深圳 · shop.example.com"."""
    parts = []
    if context.get("browser") and context.get("os"):
        parts.append(f"{context['browser']} on {context['os']}")
    elif context.get("browser") or context.get("os"):
        parts.append(context.get("browser") or context.get("os"))
    parts.append(context.get("location") or "unknown location")
    if context.get("site"):
        parts.append(context["site"])
    return " · ".join(parts)[:300]
