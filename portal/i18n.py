"""Page texts in Simplified Chinese and English.

The language comes from ``?lang=`` (the switch on every page, remembered in a
cookie), then the ``lang`` cookie, then ``Accept-Language``; Chinese is the
default, as for most of this product's users.
"""

from __future__ import annotations

from starlette.requests import Request

LANGUAGES = ("zh-CN", "en")
DEFAULT = "zh-CN"
COOKIE = "lang"

MESSAGES: dict[str, dict[str, str]] = {
    "zh-CN": {
        "product": "微信扫码登录",
        "switch_to": "English",
        "apex.title": "微信扫码登录门户",
        "apex.lead": "用微信扫一扫，登录电脑网站。自托管、多租户，支持 OpenID Connect。",
        "apex.step1": "网页显示二维码",
        "apex.step2": "用微信扫码，在小程序里确认",
        "apex.step3": "网页立即登录，获得用户资料与令牌",
        "apex.console": "管理控制台",
        "apex.phone": "手机模拟器（开发）",
        "pool.title": "登录 {name}",
        "pool.lead": "使用微信扫码登录",
        "pool.coming": "扫码登录页面即将启用。",
        "error.title": "出错了",
        "error.back": "返回首页",
        "error.code": "错误代码",
        "error.400": "请求无效。",
        "error.404": "页面不存在。",
        "error.405": "不支持此请求方法。",
        "error.500": "服务器内部错误，请稍后再试。",
        "error.503": "服务暂时不可用，请稍后再试。",
        "error.pool_not_found": "此地址没有登录门户。",
        "error.unknown_host": "此地址不由本门户提供服务。",
        "error.invalid_host": "请求的主机名无效。",
    },
    "en": {
        "product": "WeChat scan login",
        "switch_to": "中文",
        "apex.title": "WeChat scan login portal",
        "apex.lead": "Log in to websites by scanning a QR code with WeChat. "
        "Self-hosted, multi-tenant, OpenID Connect.",
        "apex.step1": "The website shows a QR code",
        "apex.step2": "Scan it with WeChat and confirm in the mini program",
        "apex.step3": "The website is logged in at once, with the profile and tokens",
        "apex.console": "Admin console",
        "apex.phone": "Phone simulator (dev)",
        "pool.title": "Log in to {name}",
        "pool.lead": "Scan with WeChat to log in",
        "pool.coming": "The scan login page is coming soon.",
        "error.title": "Something went wrong",
        "error.back": "Back to the home page",
        "error.code": "Error code",
        "error.400": "The request is not valid.",
        "error.404": "This page does not exist.",
        "error.405": "This request method is not supported.",
        "error.500": "Internal error; please try again later.",
        "error.503": "The service is temporarily unavailable; please try again shortly.",
        "error.pool_not_found": "There is no login portal at this address.",
        "error.unknown_host": "This address is not served by this portal.",
        "error.invalid_host": "The requested host name is not valid.",
    },
}


def _match(tag: str) -> str | None:
    tag = tag.strip().lower()
    if tag.startswith("zh"):
        return "zh-CN"
    if tag.startswith("en"):
        return "en"
    return None


def from_accept_language(header: str) -> str | None:
    choices = []
    for i, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        lang = _match(tag)
        if lang and q > 0:
            choices.append((-q, i, lang))
    return min(choices)[2] if choices else None


def pick(request: Request) -> tuple[str, bool]:
    """The language, and whether it was chosen explicitly now (to remember in a cookie)."""
    asked = _match(request.query_params.get("lang", ""))
    if asked:
        return asked, True
    cookie = request.cookies.get(COOKIE)
    if cookie in LANGUAGES:
        return cookie, False
    return from_accept_language(request.headers.get("accept-language", "")) or DEFAULT, False


def translator(lang: str):
    catalog = MESSAGES.get(lang, MESSAGES[DEFAULT])
    fallback = MESSAGES["en"]

    def _(key: str, **params: object) -> str:
        text = catalog.get(key) or fallback.get(key) or key
        return text.format(**params) if params else text

    return _
