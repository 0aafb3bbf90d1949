"""WeChat API error codes and the exceptions the client raises.

WeChat answers errors with HTTP 200 and ``{"errcode": N, "errmsg": "..."}``; the
codes below are the ones this project reacts to (and the fake produces).
"""

from __future__ import annotations

import re
from enum import IntEnum

_INVALID_IP = re.compile(r"invalid ip ([0-9A-Fa-f.:]{2,45})")


class ErrCode(IntEnum):
    SYSTEM_BUSY = -1
    INVALID_CREDENTIAL = 40001  # access token unknown, or no longer the latest one
    INVALID_GRANT_TYPE = 40002
    INVALID_APPID = 40013
    INVALID_CODE = 40029
    INVALID_ARGS = 40097
    INVALID_APPSECRET = 40125
    INVALID_SCENE_CHARS = 40129  # a character WeChat does not allow in a scene
    CODE_USED = 40163
    IP_NOT_WHITELISTED = 40164  # the caller's address is not on the app's IP whitelist
    INVALID_SCENE = 40169
    HIGH_RISK_USER = 40226
    APPID_MISSING = 41002
    APPSECRET_MISSING = 41004
    CODE_MISSING = 41008
    INVALID_PAGE = 41030
    ACCESS_TOKEN_EXPIRED = 42001
    DAILY_QUOTA = 45009
    MINUTE_QUOTA = 45011
    DATA_FORMAT = 47001
    # Link rules ("扫普通链接二维码打开小程序", qrcodejumpadd / qrcodejumppublish)
    LINK_INVALID = 85066  # not a URL a rule can have
    LINK_VERIFY_FAILED = 85069  # the verification file is not served under the prefix
    LINK_EXISTS = 85071  # this mini program already has the rule
    LINK_TAKEN = 85072  # another mini program has the prefix
    LINK_RULES_FULL = 85073  # the mini program's rules are capped
    RISKY_CONTENT = 87014  # content security: risky content
    # URL Scheme and URL Link (generatescheme, generate_urllink; issue 20)
    LINK_NO_PERMISSION = 40002  # "暂无生成权限": a personal account's mini program
    LINK_INVALID_PATH = 40165  # not a published page, or a path with a query
    LINK_INVALID_QUERY = 40212  # over 1024 characters, or a character WeChat refuses
    MP_NOT_PUBLISHED = 85079  # the mini program has no published version
    LINK_LONG_QUOTA = 85400  # long-lived links capped
    LINK_EXPIRY = 85401  # the expiry is not between a minute and 30 days


# The getPhoneNumber button's ``errno`` (not a server errcode) when the mini
# program's phone-number quota is spent: "该功能使用次数已达当前小程序上限".
PHONE_QUOTA_ERRNO = 1400001


ERRMSG: dict[int, str] = {
    ErrCode.SYSTEM_BUSY: "system error",
    ErrCode.INVALID_CREDENTIAL: "invalid credential, access_token is invalid or not latest",
    ErrCode.INVALID_GRANT_TYPE: "invalid grant_type",
    ErrCode.INVALID_APPID: "invalid appid",
    ErrCode.INVALID_CODE: "invalid code",
    ErrCode.INVALID_ARGS: "invalid args",
    ErrCode.INVALID_APPSECRET: "invalid appsecret",
    ErrCode.INVALID_SCENE_CHARS: "invalid scene",
    ErrCode.CODE_USED: "code been used",
    ErrCode.IP_NOT_WHITELISTED: "invalid ip, not in whitelist",
    ErrCode.INVALID_SCENE: "invalid length for scene, or the data is not json string",
    ErrCode.HIGH_RISK_USER: "high risk user",
    ErrCode.APPID_MISSING: "appid missing",
    ErrCode.APPSECRET_MISSING: "appsecret missing",
    ErrCode.CODE_MISSING: "missing code",
    ErrCode.INVALID_PAGE: "invalid page",
    ErrCode.ACCESS_TOKEN_EXPIRED: "access_token expired",
    ErrCode.DAILY_QUOTA: "reach max api daily quota limit",
    ErrCode.MINUTE_QUOTA: "api minute-quota reach limit  mustslower  retry next minute",
    ErrCode.DATA_FORMAT: "data format error",
    ErrCode.LINK_INVALID: "链接错误 (invalid prefix)",
    ErrCode.LINK_VERIFY_FAILED: "校验文件失败 (verification file not found under the prefix)",
    ErrCode.LINK_EXISTS: "已添加该链接，请勿重复添加",
    ErrCode.LINK_TAKEN: "该链接已被占用 (the prefix belongs to another mini program)",
    ErrCode.LINK_RULES_FULL: "二维码规则已满",
    ErrCode.RISKY_CONTENT: "risky content",
    ErrCode.LINK_INVALID_PATH: "invalid weapp pagepath",
    ErrCode.LINK_INVALID_QUERY: "invalid query",
    ErrCode.MP_NOT_PUBLISHED: "weapp not published",
    ErrCode.LINK_LONG_QUOTA: "reach max long time quota limit",
    ErrCode.LINK_EXPIRY: "time limit between 1min and 30 days",
}


class WeChatError(Exception):
    """WeChat answered with a non-zero ``errcode`` (``errmsg`` as WeChat sent it,
    with any credential of the request redacted)."""

    def __init__(self, errcode: int, errmsg: str, *, api: str | None = None) -> None:
        self.errcode = int(errcode)
        self.errmsg = errmsg
        self.api = api
        super().__init__(f"WeChat {api or 'API'} errcode {self.errcode}: {errmsg}")


def whitelist_ip(errmsg: str) -> str | None:
    """The caller's address in a 40164 errmsg (``invalid ip 1.2.3.4 ipv6 ...``),
    which WeChat names there; None if it is not there."""
    match = _INVALID_IP.search(errmsg)
    return match.group(1) if match else None


class WeChatUnavailable(WeChatError):
    """WeChat could not be reached or stayed busy (errcode -1) after the retries.

    A subclass of :class:`WeChatError` with ``errcode == -1`` so that one
    ``except WeChatError`` mapping by errcode works; catch this first to tell
    "try again later" (502) apart from a definite refusal.
    """

    def __init__(self, errmsg: str, *, api: str | None = None) -> None:
        super().__init__(ErrCode.SYSTEM_BUSY, errmsg, api=api)
