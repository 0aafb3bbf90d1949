"""Checks for the URLs and names tenants register."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from portal.errors import ValidationError

# A pool's slug: one DNS label of its host, so the host router can tell a pool's
# name from anything else before it asks the database.
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")

_LOOPBACK_NAMES = {"localhost"}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uri(value: str, *, field: str = "redirect_uri", allow_http: bool = False) -> str:
    """An absolute http(s) URL without fragment; plain http only for loopback (RFC 8252)
    or in dev. Matching later is exact, so the text is kept as given."""
    value = value.strip()
    if not value or len(value) > 2000:
        raise ValidationError(f"{field} must be a URL of at most 2000 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        # NUL cannot even be stored (PostgreSQL text); a CR/LF would split a Location header.
        raise ValidationError(f"{field} must not contain control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ValidationError(f"{field} {value!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValidationError(f"{field} {value!r} must be an absolute http(s) URL")
    if parts.fragment or "#" in value:
        raise ValidationError(f"{field} {value!r} must not contain a fragment")
    if parts.username or parts.password:
        raise ValidationError(f"{field} {value!r} must not contain credentials")
    if parts.scheme == "http" and not (allow_http or _is_loopback(host)):
        raise ValidationError(f"{field} {value!r} must use https (http only for localhost)")
    return value


def web_origin(value: str, *, allow_http: bool = False) -> str:
    """``scheme://host[:port]`` exactly, as browsers send it in ``Origin``."""
    value = value.strip().rstrip("/")
    uri = redirect_uri(value, field="origin", allow_http=allow_http)
    parts = urlsplit(uri)
    if parts.path or parts.query:
        raise ValidationError(f"origin {value!r} must be scheme://host[:port] with no path")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def display_name(value: str, *, field: str = "name", max_len: int = 100) -> str:
    value = " ".join(value.split())
    if not value or len(value) > max_len:
        raise ValidationError(f"{field} must be 1 to {max_len} characters")
    if any(ord(c) < 32 for c in value):
        raise ValidationError(f"{field} must not contain control characters")
    return value
