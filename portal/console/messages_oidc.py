"""The console's texts for what a relying party registers beyond its URIs
(issue 18: response types, PAR, keys, back- and front-channel logout), in
Simplified Chinese and English."""

from __future__ import annotations

from portal.web import i18n

CATALOG: dict[str, dict[str, str]] = {
    "zh-CN": {
        "console.oidc.title": "OpenID Connect 高级设置",
        "console.oidc.help": "大多数网站保持默认即可：授权码流程（code），不推送请求，不注册密钥和退出地址。",
        "console.oidc.response_types": "允许的 response_type",
        "console.oidc.response_types_help": "code：授权码（推荐）。id_token：隐式流程，ID 令牌经浏览器返回。code id_token：混合流程。从不提供 token（访问令牌不经浏览器传递）。",
        "console.oidc.require_par": "必须先推送授权请求（PAR）",
        "console.oidc.require_par_help": "勾选后，此应用只能先 POST /oidc/par 推送请求，再用返回的 request_uri 打开登录页。",
        "console.oidc.jwks": "公钥 JWK Set（JSON）",
        "console.oidc.jwks_help": "用于验证此应用签名的请求对象（JAR）和 private_key_jwt 客户端认证。只填公钥；与 jwks_uri 二选一。",
        "console.oidc.jwks_uri": "jwks_uri（公钥地址）",
        "console.oidc.jwks_uri_help": "此应用发布公钥的 https 地址；本服务器只访问公网地址。",
        "console.oidc.backchannel": "后端退出地址（backchannel_logout_uri）",
        "console.oidc.backchannel_help": "用户在任一网站退出、被封禁或刷新令牌被重放时，后台向此地址 POST 签名的 logout_token（失败会重试）。",
        "console.oidc.frontchannel": "前端退出地址（frontchannel_logout_uri）",
        "console.oidc.frontchannel_help": "退出页面会以 iframe 打开此地址，并附带 iss 和 sid。",
        "console.oidc.saved": "OpenID Connect 设置已保存。",
        "console.oidc.err.response_types": "至少选择一种 response_type。",
        "console.oidc.err.jwks": "JWK Set 无效：{reason}",
        "console.oidc.err.uri": "地址无效：{value}",
        "console.oidc.err.both": "jwks 和 jwks_uri 只能填一个。",
    },
    "en": {
        "console.oidc.title": "OpenID Connect, advanced",
        "console.oidc.help": "Most websites keep the defaults: the code flow, no pushed requests, no keys or logout addresses.",
        "console.oidc.response_types": "Allowed response types",
        "console.oidc.response_types_help": "code: the authorization code (recommended). id_token: the implicit flow, the ID token through the browser. code id_token: the hybrid flow. token is never offered (no access token through the browser).",
        "console.oidc.require_par": "Authorization requests must be pushed first (PAR)",
        "console.oidc.require_par_help": "When ticked, this application must POST its request to /oidc/par and open the login page with the request_uri it gets back.",
        "console.oidc.jwks": "Public JWK Set (JSON)",
        "console.oidc.jwks_help": "Verifies this application's signed request objects (JAR) and private_key_jwt client authentication. Public keys only; either this or jwks_uri.",
        "console.oidc.jwks_uri": "jwks_uri (where its public keys are)",
        "console.oidc.jwks_uri_help": "The https address where this application publishes its public keys; this server fetches only public addresses.",
        "console.oidc.backchannel": "Back-channel logout URI",
        "console.oidc.backchannel_help": "When the person logs out at any site, is blocked, or a refresh token is replayed, a signed logout_token is POSTed here in the background (retried on failure).",
        "console.oidc.frontchannel": "Front-channel logout URI",
        "console.oidc.frontchannel_help": "The logout page opens this address in an iframe, with iss and sid.",
        "console.oidc.saved": "OpenID Connect settings saved.",
        "console.oidc.err.response_types": "Choose at least one response type.",
        "console.oidc.err.jwks": "The JWK Set is not valid: {reason}",
        "console.oidc.err.uri": "Not a valid address: {value}",
        "console.oidc.err.both": "Give jwks or jwks_uri, not both.",
    },
}

i18n.extend(CATALOG)
