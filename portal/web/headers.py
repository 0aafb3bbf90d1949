"""Security headers: one place that says what every page may load, where its
forms may go, who may frame it and what it tells other sites.

Two layers:

- **Every response** (JSON, images, static files, pages) gets the headers of
  ``always(settings)``: ``X-Content-Type-Options: nosniff`` (a JSON body or an
  uploaded avatar is never run as a script or page), ``X-Frame-Options: DENY``
  (nothing of the portal is meant to be framed), and in production over https
  ``Strict-Transport-Security``. The Observability middleware appends them,
  computed once at start, so the QR API's hot path pays one list concat.
- **Every HTML page** is rendered by ``portal.web.pages.render``, which asks
  ``page_headers`` for a Content-Security-Policy built from the page's
  ``Policy`` below and a fresh nonce per response. Every ``<script>`` (and
  ``<style>``, if a template ever has one) carries ``nonce="{{ csp_nonce }}"``;
  nothing without it runs, so an injected tag or inline handler is inert. No
  policy has ``'unsafe-inline'`` or ``'unsafe-eval'``.

Nothing is framable but an authorization response. The popup login
(``response_mode=web_message``) is a top-level window talking to its opener;
the embedded ``<portal-login>`` component and ``Portal.qrLogin`` draw in the
site's own page. Silent authentication (``prompt=none`` in a client's hidden
iframe, issue 18; over https the pool's session cookie is ``SameSite=None``)
renders the ``form_post`` or ``web_message`` response in that frame: those
two pages name exactly the origin of the request's registered redirect URI in
``frame-ancestors`` and go without ``X-Frame-Options`` (which cannot name an
origin). Every other page, the hosted login page included, sends
``frame-ancestors 'none'``.

``form-action`` is checked by Chromium on every redirect that follows a form
submission too, so a page whose form leads (through a 303) to the client's
redirect URI must name that origin: the hosted login page allows its own
origin and exactly the origin of the request's registered redirect URI, the
``form_post`` page that origin alone. A client whose callback, answering that
POST, redirects on to yet another origin is refused by the browser; its
callback must stay on its own origin (or redirect after a page of its own).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from portal.settings import Settings

# WeChat's avatar CDN (``getUserProfile`` and older logins handed these out);
# avatars uploaded through ``POST /api/mp/avatar`` live on the apex. Scheme-less,
# so an https page allows only https, an http page (dev) both.
WECHAT_AVATAR_HOSTS = ("thirdwx.qlogo.cn", "wx.qlogo.cn")

HSTS = "max-age=63072000; includeSubDomains"

# Pages whose URL can carry a code, a ticket, state or an authorization request:
# their address must never leave in a Referer header.
NO_REFERRER_PATHS = ("/oidc/", "/q/", "/dev/callback")
DEFAULT_REFERRER = "same-origin"

# Answers that are not pages (redirects, downloads) but may be opened in a tab.
LOCKED_DOWN = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

_HOST_SOURCE_RE = re.compile(r"^[a-z0-9.-]+$")


@dataclass(frozen=True)
class Policy:
    """What one kind of page needs beyond ``default-src 'none'``.

    Source lists may name ``{apex}`` (the apex origin, where avatars and the
    mini-program API live) and ``{pools}`` (every pool host); ``form_target``
    says whether a per-response origin (the client's redirect URI) is added
    to ``form-action``; ``form_target_param`` names the entry of the template's
    ``params`` that holds it, for pages whose handler does not pass it.
    """

    name: str
    img: tuple[str, ...] = ("'self'",)
    connect: tuple[str, ...] = ()
    form_action: tuple[str, ...] = ()
    form_target: bool = False
    form_target_param: str | None = None
    referrer: str = DEFAULT_REFERRER


# --- the page types -----------------------------------------------------------

# Apex home, error pages, /q/{ticket}, the OIDC message pages (logged in, logged
# out, bad request: the "logged in" one shows the user's avatar), the dev
# callback page. No forms, no script of their own.
PAGE = Policy("page", img=("'self'", "{apex}", *WECHAT_AVATAR_HOSTS))

# The hosted login page (/oidc/auth, the pool's /): follows its ticket by SSE or
# long polling, shows the scanner's avatar, posts the confirmed ticket to
# /oidc/auth/complete, which 303s to the client's redirect URI.
HOSTED = Policy(
    "hosted",
    img=("'self'", "{apex}", *WECHAT_AVATAR_HOSTS),
    connect=("'self'",),
    form_action=("'self'",),
    form_target=True,
    referrer="no-referrer",
)

# response_mode=form_post: a form posted at once to the registered redirect URI.
FORM_POST = Policy("form_post", form_target=True, referrer="no-referrer")

# response_mode=web_message: postMessage to the opener, then close. No form.
WEB_MESSAGE = Policy("web_message", referrer="no-referrer")

# RP-initiated logout's confirmation: a form posted back to /oidc/logout, which
# then 303s to the post-logout redirect URI if the client registered it. Its
# origin is allowed as asked (checked only after the POST; the page's one form
# posts to /oidc/logout whatever the policy allows, so this widens nothing an
# attacker controls).
LOGOUT_CONFIRM = Policy(
    "logout_confirm",
    form_action=("'self'",),
    form_target=True,
    form_target_param="post_logout_redirect_uri",
    referrer="no-referrer",
)

# RP-initiated logout's last page when clients registered front-channel logout:
# it frames each one's logout URI (their origins in frame-src, per response),
# then a script goes on to the post-logout redirect URI.
LOGGED_OUT = Policy("logged_out", referrer="no-referrer")

# The phone simulator (dev only): calls the mini-program API on the apex, shows
# the scanned pool's logo from the pool's host.
DEV_PHONE = Policy(
    "dev_phone",
    img=("'self'", "{pools}", "{apex}", *WECHAT_AVATAR_HOSTS),
    connect=("'self'",),
    form_action=("'self'",),
)

# /q/{ticket}: on the apex (the default mini program's link rule, issue 17) it
# shows the ticket's pool's logo from the pool's host.
Q_PAGE = Policy("q_page", img=("'self'", "{pools}", "{apex}"))

# The admin console: its own forms and images (logo, QR preview), no script.
CONSOLE = Policy("console", form_action=("'self'",))

_BY_TEMPLATE = {
    "oidc_login.html": HOSTED,
    "oidc_form_post.html": FORM_POST,
    "oidc_web_message.html": WEB_MESSAGE,
    "oidc_logout_confirm.html": LOGOUT_CONFIRM,
    "oidc_logged_out.html": LOGGED_OUT,
    "dev_phone.html": DEV_PHONE,
    "scan_outside_wechat.html": Q_PAGE,
}


def policy_for(template: str) -> Policy:
    if template.startswith("console/"):
        return CONSOLE
    return _BY_TEMPLATE.get(template, PAGE)


# --- building the headers -----------------------------------------------------


def new_nonce() -> str:
    """128 random bits, fresh for every response (base64url: valid in a CSP source)."""
    return secrets.token_urlsafe(16)


def origin_source(uri: str) -> str | None:
    """The CSP source naming exactly the origin of ``uri``, or None when it has
    none a CSP can name (not http(s), an IPv6 or non-ASCII host)."""
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host or not _HOST_SOURCE_RE.match(host):
        return None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _expand(sources: tuple[str, ...], settings: Settings) -> list[str]:
    out = []
    for source in sources:
        if source == "{apex}":
            source = settings.base_url
        elif source == "{pools}":
            source = f"{settings.scheme}://*.{settings.apex_netloc}"
        out.append(source)
    return out


def csp(
    policy: Policy,
    nonce: str,
    settings: Settings,
    form_target: str | None = None,
    frame_ancestor: str | None = None,
    frame_sources: tuple[str, ...] | list[str] = (),
) -> str:
    """The Content-Security-Policy of one response of this kind. ``frame_ancestor``:
    the one origin (of this URI) that may frame it, for an authorization response
    in a client's hidden iframe (silent authentication); otherwise none."""
    forms = _expand(policy.form_action, settings)
    if policy.form_target and form_target:
        source = origin_source(form_target)
        if source is not None and source not in forms:
            forms.append(source)
    directives = [
        "default-src 'none'",
        f"script-src 'nonce-{nonce}'",
        f"style-src 'self' 'nonce-{nonce}'",
        "img-src " + " ".join(dict.fromkeys(_expand(policy.img, settings))),
        "connect-src " + (" ".join(_expand(policy.connect, settings)) or "'none'"),
        "object-src 'none'",
        "base-uri 'none'",
        "form-action " + (" ".join(forms) or "'none'"),
        "frame-ancestors " + ((frame_ancestor and origin_source(frame_ancestor)) or "'none'"),
    ]
    frames = [s for s in dict.fromkeys(origin_source(u) for u in frame_sources) if s]
    if frames:  # front-channel logout: exactly these origins may be framed
        directives.append("frame-src " + " ".join(frames))
    return "; ".join(directives)


def referrer_for(policy: Policy, path: str) -> str:
    if policy.referrer == "no-referrer" or path.startswith(NO_REFERRER_PATHS):
        return "no-referrer"
    return policy.referrer


def page_headers(
    policy: Policy,
    nonce: str,
    settings: Settings,
    path: str,
    form_target: str | None = None,
    frame_ancestor: str | None = None,
    frame_sources: tuple[str, ...] | list[str] = (),
) -> dict[str, str]:
    """The page-only headers of one HTML response (the always-headers come from
    the middleware)."""
    return {
        "content-security-policy": csp(
            policy, nonce, settings, form_target, frame_ancestor, frame_sources
        ),
        "referrer-policy": referrer_for(policy, path),
    }


def always(settings: Settings, framable: bool = False) -> tuple[tuple[bytes, bytes], ...]:
    """The raw headers every response carries, built once per process. ``framable``:
    those of a response whose CSP names the one origin that may frame it (the
    handler sets ``scope["portal_framable"]``): no ``X-Frame-Options``, which
    has no way to name an origin."""
    out = [(b"x-content-type-options", b"nosniff")]
    if not framable:
        out.append((b"x-frame-options", b"DENY"))
    # Never in dev or over plain http: a browser that once saw HSTS for
    # localhost would refuse every plain-http dev server there for two years.
    if settings.scheme == "https" and not settings.is_dev:
        out.append((b"strict-transport-security", HSTS.encode("ascii")))
    return tuple(out)
