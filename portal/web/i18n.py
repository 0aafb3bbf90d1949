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
        "login.title": "登录 {name}",
        "login.for_client": "将登录到 {client}",
        "login.qr_alt": "用微信扫码登录的二维码",
        "login.scan_hint": "请使用微信扫一扫登录",
        "login.dev_phone": "在手机模拟器中打开",
        "login.dev_phone_help": "开发模式：没有微信也能在模拟器里扫码、确认。",
        "login.long_press": "长按二维码，选择“识别图中的二维码”登录",
        "login.on_phone": "请在电脑上打开此页面，用手机微信扫码；或在微信中打开此链接，长按二维码识别。",
        "login.scanned": "扫码成功，请在手机上确认登录",
        "login.scanned_hint": "请在手机上点击“确认登录”",
        "login.match_number": "请在手机上选择这个数字",
        "login.open_wechat": "打开微信登录",
        "login.open_wechat_hint": "点击“打开微信登录”，在微信中确认后回到这里，页面会自动完成登录。",
        "login.confirmed": "已确认，正在登录…",
        "login.expired": "二维码已过期",
        "login.cancelled": "你已取消登录",
        "login.refresh": "刷新二维码",
        "login.offline": "网络连接中断，正在重试…",
        "login.continue": "继续",
        "login.returning": "正在返回应用…",
        "login.popup_close": "如果窗口没有自动关闭，请手动关闭。",
        "oidc.unknown_client.title": "无法登录",
        "oidc.unknown_client.text": "此登录请求来自未注册的应用。",
        "oidc.bad_redirect_uri.title": "无法登录",
        "oidc.bad_redirect_uri.text": "此登录请求的回调地址未在应用中注册，为了你的安全已停止。",
        "oidc.missing_redirect_uri.title": "无法登录",
        "oidc.missing_redirect_uri.text": "此登录请求没有说明登录后返回的地址（redirect_uri），所以无法继续。请返回网站重新登录；如果你是网站开发者，请在请求中加上已注册的 redirect_uri。",
        "oidc.bad_request.title": "无法登录",
        "oidc.bad_request.text": "此登录请求的参数无效（过长）。请返回网站重新登录。",
        "oidc.bad_request_object.title": "无法登录",
        "oidc.bad_request_object.text": "此登录请求无效：应用签名的请求无法验证，或应用必须先推送请求（PAR）。请返回网站重新登录。",
        "oidc.bad_request_uri.title": "无法登录",
        "oidc.bad_request_uri.text": "此登录请求已过期或已被使用（request_uri）。请返回网站重新登录。",
        "oidc.login_incomplete.title": "登录未完成",
        "oidc.login_incomplete.text": "二维码已失效或已被使用，请返回网站重新扫码。",
        "oidc.login_other_browser.title": "登录未完成",
        "oidc.login_other_browser.text": "此登录是在另一个浏览器中发起的。为了你的安全，请在发起登录的浏览器中完成。",
        "oidc.logged_in.title": "登录成功",
        "oidc.logged_in.text": "你已登录为 {name}。",
        "oidc.logged_out.title": "已退出登录",
        "oidc.logged_out.text": "你已安全退出。",
        "oidc.logout_confirm.title": "退出登录？",
        "oidc.logout_confirm.text": "确定要退出 {pool} 吗？",
        "oidc.logout_confirm.button": "退出登录",
        "oidc.logout_bad_hint.title": "无法退出",
        "oidc.logout_bad_hint.text": "退出请求无效。",
        "oidc.logout_bad_redirect.title": "已退出登录",
        "oidc.logout_bad_redirect.text": "你已退出，但退出后的跳转地址未注册，因此没有跳转。",
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
        "error.rate_limited": "来自您所在网络的请求过多，请稍等片刻再刷新页面。",
        "error.pool_not_found": "此地址没有登录门户。",
        "error.unknown_host": "此地址不由本门户提供服务。",
        "error.invalid_host": "请求的主机名无效。",
        "phone.title": "手机模拟器",
        "phone.lead": "在这里扮演微信小程序：粘贴二维码里的链接，选一个微信用户，然后扫码、确认或取消。它调用的是真实的小程序接口，微信一方由开发用的模拟微信服务器扮演。",
        "phone.noscript": "此页面需要启用 JavaScript。",
        "phone.url": "二维码内容（链接）",
        "phone.url_help": "形如 {平台地址}/q/{ticket}（私有小程序：它的前缀）；二维码内容会像微信扫码一样，只在已发布的链接规则下打开小程序。也可以粘贴二维码图片的地址（…/api/qrcode/{ticket}.png）或只填 ticket。",
        "phone.user": "微信用户名",
        "phone.user_help": "字母、数字或下划线；同一用户名就是同一个微信用户。",
        "phone.number": "手机号（可选）",
        "phone.number_help": "只填数字；确认时作为微信授权的手机号。",
        "phone.nickname": "昵称（可选）",
        "phone.avatar": "头像链接（可选）",
        "phone.advanced": "小程序设置",
        "phone.appid": "小程序 AppID",
        "phone.appid_help": "默认是平台的小程序；用户池使用私有小程序时改成它的 AppID。",
        "phone.scan": "扫码",
        "phone.confirm": "确认登录",
        "phone.cancel": "取消",
        "phone.ready": "就绪。",
        "phone.pool": "登录到",
        "phone.client": "应用：",
        "phone.pick_number": "数字匹配：选择电脑上显示的数字",
        "phone.log": "接口记录",
        "phone.clear": "清空",
        "phone.log_empty": "还没有请求。",
        "phone.js.bad_url": "请填写二维码内容（形如 …/q/{ticket} 的链接）、二维码图片地址（…/api/qrcode/{ticket}.png 或 .svg）或 ticket 本身。",
        "phone.js.bad_user": "微信用户名只能包含字母、数字和下划线（最多 32 个字符）。",
        "phone.js.bad_phone": "手机号只能包含数字。",
        "phone.js.no_appid": "请填写小程序 AppID。",
        "phone.js.logging_in": "正在以 {user} 的身份登录小程序…",
        "phone.js.logged_in": "已登录小程序。",
        "phone.js.scanning": "正在扫码…",
        "phone.js.scanned": "已扫码，请确认登录或取消。",
        "phone.js.confirming": "正在确认…",
        "phone.js.confirmed": "已确认登录，电脑上的网页会立即登录。",
        "phone.js.cancelling": "正在取消…",
        "phone.js.cancelled": "已取消登录。",
        "phone.js.failed": "失败",
        "phone.js.network": "网络错误：无法连接门户。",
        "phone.js.session_expired": "小程序会话已失效，正在重新登录…",
        "phone.js.phone_required": "此用户池要求手机号。",
        "phone.js.no_client": "（默认应用）",
        "phone.js.expires_in": "{seconds} 秒后过期",
        "phone.js.hint.ticket_not_found": "二维码不存在或早已失效。",
        "phone.js.hint.ticket_expired": "二维码已过期或已被使用，请在电脑上刷新二维码。",
        "phone.js.hint.ticket_taken": "另一个微信用户已经扫了这个二维码。",
        "phone.js.hint.ticket_not_scanned": "请先扫码，再确认。",
        "phone.js.hint.not_scanner": "只有扫码的那个微信用户才能确认或取消。",
        "phone.js.hint.wrong_mini_program": "这个二维码属于使用另一个小程序的用户池：请在“小程序设置”里改用它的 AppID。",
        "phone.js.hint.phone_required": "此用户池要求手机号：请填写手机号后再确认。",
        "phone.js.hint.invalid_appid": "门户不认识这个小程序 AppID。",
        "phone.js.hint.invalid_code": "微信登录凭证无效。",
        "phone.js.hint.code_used": "微信登录凭证已被使用。",
        "phone.js.hint.wechat_unavailable": "微信接口暂时无法连接，请稍后再试。",
        "phone.js.hint.wechat_rate_limited": "微信接口限流，请稍后再试。",
        "phone.js.hint.wechat_risky_user": "微信判定此账号有风险，拒绝登录。",
        "phone.js.hint.wechat_ip_not_whitelisted": "微信拒绝了本服务器的地址（不在小程序的 IP 白名单中）：管理员在控制台「测试连接」可看到要添加的地址。",
        "phone.js.hint.invalid_phone_code": "手机号授权凭证无效。",
        "phone.js.hint.signup_disabled": "此用户池只允许已有用户登录，不接受新注册。",
        "phone.js.hint.user_blocked": "此用户已被管理员封禁。",
        "phone.js.hint.no_link_rule": "微信不会为这个二维码打开小程序（没有已发布的“扫普通链接二维码打开小程序”规则）",
        "phone.js.opening": "微信识别二维码中……",
        "phone.cb.title": "登录回调（开发）",
        "phone.cb.lead": "用户池的“登录后回调地址”在开发环境中指向这里。下表是本页收到的查询参数。",
        "phone.cb.caption": "收到的查询参数",
        "phone.cb.param": "参数",
        "phone.cb.value": "值",
        "phone.cb.absent": "（无）",
        "phone.cb.success": "登录成功：收到了授权码。",
        "phone.cb.error": "登录没有完成：收到了错误。",
        "phone.cb.exchange": "真实网站的后端会用授权码在用户池的 /oidc/token 换取令牌，例如：",
        "phone.cb.to_phone": "打开手机模拟器",
        "phone.cb.secret_file": "在终端里原样运行即可（仅开发环境）：密钥是演示用户池默认客户端的，portal dev 把它保存在数据目录里，并在启动时打印。授权码只能用一次，60 秒内有效。",
        "phone.cb.secret_printed": "CLIENT_SECRET 是用户池默认客户端的密钥，由 portal pool create 打印（也可以在控制台重新生成）。授权码只能用一次，60 秒内有效。",
        "phone.cb.state_ok": "state 与本浏览器开始登录时保存的一致：后端可以用这个授权码。",
        "phone.cb.state_missing": "没有 state：后端应拒绝这个授权码。它可能是别人扫码得到、再发给你的链接（登录 CSRF）。请从网站开始登录，网站会带上 state。",
        "phone.cb.state_mismatch": "state 与本浏览器开始登录时保存的不一致：后端应拒绝这个授权码。它可能是别人的登录（登录 CSRF）。",
        "phone.cb.start": "像网站那样开始登录（带 state）",
        "q.title": "登录 {name}",
        "q.lead": "请使用微信扫描此二维码。",
        "q.how": "打开微信，点右上角的 ＋，选择“扫一扫”，扫描电脑屏幕上的二维码，然后在小程序里确认登录。",
        "q.wechat_lead": "请在微信小程序中打开此二维码。",
        "q.wechat_how": "返回微信，用“扫一扫”扫描电脑屏幕上的二维码；如果二维码是图片，长按它并选择“识别图中的二维码”。微信会直接打开登录小程序。",
        "q.expiry": "二维码过期后，请在电脑上刷新。",
        "q.dev": "开发环境：可以用手机模拟器代替微信。",
        "q.dev_link": "在手机模拟器中打开",
    },
    "en": {
        "login.title": "Log in to {name}",
        "login.for_client": "You are logging in to {client}",
        "login.qr_alt": "QR code to scan with WeChat",
        "login.scan_hint": "Scan the QR code with WeChat to log in",
        "login.dev_phone": "open in the phone simulator",
        "login.dev_phone_help": "Dev mode: scan and confirm in the simulator, no WeChat needed.",
        "login.long_press": "Long-press the QR code and choose “Recognise QR code” to log in",
        "login.on_phone": "Open this page on a computer and scan it with WeChat, or open this link in WeChat and long-press the QR code.",
        "login.scanned": "Scanned: confirm the login on your phone",
        "login.scanned_hint": "Tap “Confirm login” on your phone",
        "login.match_number": "Pick this number on your phone",
        "login.open_wechat": "Open WeChat to log in",
        "login.open_wechat_hint": "Tap “Open WeChat to log in”, confirm in WeChat, then come back here: this page finishes the login.",
        "login.confirmed": "Confirmed, logging you in…",
        "login.expired": "The QR code has expired",
        "login.cancelled": "You cancelled the login",
        "login.refresh": "Refresh the QR code",
        "login.offline": "Connection lost, retrying…",
        "login.continue": "Continue",
        "login.returning": "Returning to the application…",
        "login.popup_close": "If this window does not close by itself, close it.",
        "oidc.unknown_client.title": "Cannot log in",
        "oidc.unknown_client.text": "This login request comes from an application that is not registered.",
        "oidc.bad_redirect_uri.title": "Cannot log in",
        "oidc.bad_redirect_uri.text": "This login request names a return address the application did not register, so it was stopped for your safety.",
        "oidc.missing_redirect_uri.title": "Cannot log in",
        "oidc.missing_redirect_uri.text": "This login request does not say where to return after login (redirect_uri), so it cannot go on. Go back to the website and log in again; if you develop the website, add a registered redirect_uri to the request.",
        "oidc.bad_request.title": "Cannot log in",
        "oidc.bad_request.text": "This login request has an invalid (too long) parameter. Go back to the website and log in again.",
        "oidc.bad_request_object.title": "Cannot log in",
        "oidc.bad_request_object.text": "This login request is not valid: the application's signed request does not verify, or the application must push its request first (PAR). Go back to the website and log in again.",
        "oidc.bad_request_uri.title": "Cannot log in",
        "oidc.bad_request_uri.text": "This login request has expired or was already used (request_uri). Go back to the website and log in again.",
        "oidc.login_incomplete.title": "Login not completed",
        "oidc.login_incomplete.text": "The QR code expired or was already used; go back to the website and scan again.",
        "oidc.login_other_browser.title": "Login not completed",
        "oidc.login_other_browser.text": "This login was started in another browser. For your safety, finish it in the browser where it started.",
        "oidc.logout_confirm.title": "Log out?",
        "oidc.logout_confirm.text": "Do you want to log out of {pool}?",
        "oidc.logout_confirm.button": "Log out",
        "oidc.logged_in.title": "Logged in",
        "oidc.logged_in.text": "You are logged in as {name}.",
        "oidc.logged_out.title": "Logged out",
        "oidc.logged_out.text": "You have been logged out.",
        "oidc.logout_bad_hint.title": "Cannot log out",
        "oidc.logout_bad_hint.text": "The logout request is not valid.",
        "oidc.logout_bad_redirect.title": "Logged out",
        "oidc.logout_bad_redirect.text": "You are logged out, but the address to return to is not registered, so you stay here.",
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
        "error.rate_limited": "Too many requests from your network; wait a moment, then reload the page.",
        "error.pool_not_found": "There is no login portal at this address.",
        "error.unknown_host": "This address is not served by this portal.",
        "error.invalid_host": "The requested host name is not valid.",
        "phone.title": "Phone simulator",
        "phone.lead": "Play the WeChat mini program here: paste the link in a QR code, pick a"
        " WeChat user, then scan, confirm or cancel. It calls the real mini-"
        "program API; the dev fake WeChat server plays WeChat.",
        "phone.noscript": "This page needs JavaScript.",
        "phone.url": "QR code content (link)",
        "phone.url_help": "Like {platform URL}/q/{ticket} (a private mini program: its prefix); "
        "a QR content opens the mini program only under a published link rule, as WeChat's "
        "scanner does. The QR image's address (…/api/qrcode/{ticket}.png) or the ticket alone "
        "work too.",
        "phone.user": "WeChat user name",
        "phone.user_help": "Letters, digits or underscores; the same name is the same WeChat user.",
        "phone.number": "Phone number (optional)",
        "phone.number_help": "Digits only; shared as the WeChat-verified phone number on confirm.",
        "phone.nickname": "Nickname (optional)",
        "phone.avatar": "Avatar URL (optional)",
        "phone.advanced": "Mini program settings",
        "phone.appid": "Mini program AppID",
        "phone.appid_help": "The platform's mini program by default; for a pool with a private mini"
        " program, use its AppID.",
        "phone.scan": "Scan",
        "phone.confirm": "Confirm",
        "phone.cancel": "Cancel",
        "phone.ready": "Ready.",
        "phone.pool": "Log in to",
        "phone.client": "Application:",
        "phone.pick_number": "Number matching: pick the number the computer shows",
        "phone.log": "API log",
        "phone.clear": "Clear",
        "phone.log_empty": "No requests yet.",
        "phone.js.bad_url": "Enter the QR code content (a link like …/q/{ticket}), the QR image's "
        "address (…/api/qrcode/{ticket}.png or .svg), or the ticket itself.",
        "phone.js.bad_user": "A WeChat user name has only letters, digits and underscores (at most "
        "32).",
        "phone.js.bad_phone": "A phone number has only digits.",
        "phone.js.no_appid": "Enter the mini program AppID.",
        "phone.js.logging_in": "Logging in to the mini program as {user}…",
        "phone.js.logged_in": "Logged in to the mini program.",
        "phone.js.scanning": "Scanning…",
        "phone.js.scanned": "Scanned. Confirm or cancel the login.",
        "phone.js.confirming": "Confirming…",
        "phone.js.confirmed": "Login confirmed; the page on the computer logs in at once.",
        "phone.js.cancelling": "Cancelling…",
        "phone.js.cancelled": "Login cancelled.",
        "phone.js.failed": "Failed",
        "phone.js.network": "Network error: the portal did not answer.",
        "phone.js.session_expired": "The mini-program session expired; logging in again…",
        "phone.js.phone_required": "This pool requires a phone number.",
        "phone.js.no_client": "(default application)",
        "phone.js.expires_in": "expires in {seconds} s",
        "phone.js.hint.ticket_not_found": "This QR code does not exist or is long gone.",
        "phone.js.hint.ticket_expired": "This QR code has expired or was used; refresh it on the computer.",
        "phone.js.hint.ticket_taken": "Another WeChat user already scanned this QR code.",
        "phone.js.hint.ticket_not_scanned": "Scan first, then confirm.",
        "phone.js.hint.not_scanner": "Only the WeChat user who scanned can confirm or cancel.",
        "phone.js.hint.wrong_mini_program": "This QR code belongs to a pool served by another mini program: set its"
        " AppID under “Mini program settings”.",
        "phone.js.hint.phone_required": "This pool requires a phone number: enter one and confirm again.",
        "phone.js.hint.invalid_appid": "The portal does not know this mini program AppID.",
        "phone.js.hint.invalid_code": "The WeChat login code is not valid.",
        "phone.js.hint.code_used": "The WeChat login code was already used.",
        "phone.js.hint.wechat_unavailable": "WeChat is not answering; try again shortly.",
        "phone.js.hint.wechat_rate_limited": "WeChat is rate limiting; try again shortly.",
        "phone.js.hint.wechat_risky_user": "WeChat refused this account as high risk.",
        "phone.js.hint.wechat_ip_not_whitelisted": "WeChat refused this server's address (not on the mini program's IP whitelist): the console's \"Test connection\" shows the address to add.",
        "phone.js.hint.invalid_phone_code": "The phone number code is not valid.",
        "phone.js.hint.signup_disabled": "This pool admits only existing users; sign-up is closed.",
        "phone.js.hint.user_blocked": "An admin has blocked this user.",
        "phone.js.hint.no_link_rule": "WeChat would not open the mini program for this QR code (no published link rule)",
        "phone.js.opening": "WeChat reads the QR code…",
        "phone.cb.title": "Login callback (dev)",
        "phone.cb.lead": "In dev, the pool's “callback URL after login” points here. These are "
        "the query parameters this page received.",
        "phone.cb.caption": "Query parameters received",
        "phone.cb.param": "Parameter",
        "phone.cb.value": "Value",
        "phone.cb.absent": "(none)",
        "phone.cb.success": "Logged in: an authorization code arrived.",
        "phone.cb.error": "The login did not complete: an error arrived.",
        "phone.cb.exchange": "A real website's backend would exchange the code for tokens at the "
        "pool's /oidc/token, for example:",
        "phone.cb.to_phone": "Open the phone simulator",
        "phone.cb.secret_file": "Run it in a terminal as it is (dev only): the secret is the demo "
        "pool's default client's, which portal dev keeps in its data dir and prints when it "
        "starts. A code works once, within 60 seconds.",
        "phone.cb.secret_printed": "CLIENT_SECRET is the pool's default client's secret, printed "
        "by portal pool create (or made anew in the console). A code works once, within 60 "
        "seconds.",
        "phone.cb.state_ok": "The state is the one this browser's session kept when it started the login: the backend may use this code.",
        "phone.cb.state_missing": "No state: a backend must refuse this code. It may be someone else's scan, sent to you as a link (login CSRF). Start the login from the website, which adds a state.",
        "phone.cb.state_mismatch": "The state is not the one this browser's session kept: a backend must refuse this code. It may be someone else's login (login CSRF).",
        "phone.cb.start": "Start a login as a website does (with state)",
        "q.title": "Log in to {name}",
        "q.lead": "Scan this QR code with WeChat.",
        "q.how": "Open WeChat, tap + at the top right, choose “Scan”, scan the QR code "
        "on the computer's screen, then confirm in the mini program.",
        "q.wechat_lead": "Open this QR code in the WeChat mini program.",
        "q.wechat_how": "Go back to WeChat and use “Scan” on the QR code on the computer's "
        "screen; if the QR code is an image, long-press it and choose "
        "“Recognise QR code in image”. WeChat opens the login mini program "
        "directly.",
        "q.expiry": "If the QR code has expired, refresh it on the computer.",
        "q.dev": "Dev: the phone simulator can stand in for WeChat.",
        "q.dev_link": "Open in the phone simulator",
    },
}


def extend(catalog: dict[str, dict[str, str]]) -> None:
    """Add a part of the product's texts (one module's own catalog) to the pages'.

    A key defined twice is a mistake that would show one of the two texts at
    random-looking places, so it is refused.
    """
    for lang, texts in catalog.items():
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}")
        clash = MESSAGES[lang].keys() & texts.keys()
        if clash:
            raise ValueError(f"texts defined twice: {sorted(clash)}")
        MESSAGES[lang].update(texts)


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
