/**
 * Texts of the mini program in Chinese (the default) and English, picked by the
 * WeChat language setting.
 */
var MESSAGES = {
  zh: {
    title: '扫码登录',
    loading: '正在读取登录信息…',
    loginTo: '登录',
    confirmLead: '确认后，电脑上的网页将登录你的账号',
    confirm: '确认登录',
    confirmWithPhone: '授权手机号并登录',
    sharePhone: '同时提供手机号',
    cancel: '取消',
    working: '请稍候…',
    nicknamePlaceholder: '昵称（可选）',
    avatarHint: '头像',
    phoneNeeded: '该网站需要你的手机号才能登录，请授权手机号。',
    phoneDenied: '未授权手机号。该网站需要手机号才能登录。',
    privacyTitle: '隐私保护提示',
    privacyText: '使用手机号和头像前，请阅读并同意',
    privacyGuide: '《用户隐私保护指引》',
    privacyAgree: '同意',
    privacyDisagree: '拒绝',
    privacyDenied: '未同意隐私保护指引，无法使用手机号和头像。',
    successTitle: '登录成功',
    successMessage: '登录已确认，请回到电脑上继续操作。',
    cancelledTitle: '已取消登录',
    cancelledMessage: '电脑上的网页不会登录。',
    close: '关闭',
    retry: '重试',
    scanAgain: '重新扫码',
    homeTitle: '扫码登录',
    homeMessage: '扫描电脑网页上的登录二维码。',
    scan: '扫一扫',
    startedFrom: '登录发起自',
    browserOn: '{os} 上的 {browser}',
    unknownPlace: '未知地点',
    justNow: '刚刚',
    minutesAgo: '{n} 分钟前',
    sourceWarning: '这个二维码是从图片或相册中识别的。只有当你本人刚刚在电脑上打开了上面这个网站的登录页时才确认；如果是别人发给你的二维码，请点“不是我本人操作”。',
    linkWarning: '这个登录是通过链接打开的。只有当你本人刚刚在这台手机上发起登录时才确认。',
    pickNumber: '请选择电脑上显示的数字',
    notMe: '不是我本人操作',
    reportedTitle: '已取消并报告',
    reportedMessage: '这次登录已被取消，电脑上的网页不会登录。如果有人让你扫这个码，请不要理会。',
  },
  en: {
    title: 'Scan to log in',
    loading: 'Reading the login…',
    loginTo: 'Log in to',
    confirmLead: 'Once you confirm, the web page on your computer logs in to your account.',
    confirm: 'Confirm login',
    confirmWithPhone: 'Share phone number and log in',
    sharePhone: 'Also share my phone number',
    cancel: 'Cancel',
    working: 'Please wait…',
    nicknamePlaceholder: 'Nickname (optional)',
    avatarHint: 'Avatar',
    phoneNeeded: 'This site needs your phone number to log in: share it to continue.',
    phoneDenied: 'The phone number was not shared. This site needs it to log in.',
    privacyTitle: 'Privacy',
    privacyText: 'Before the phone number and avatar can be used, read and agree to the',
    privacyGuide: 'privacy guide',
    privacyAgree: 'Agree',
    privacyDisagree: 'Disagree',
    privacyDenied: 'The privacy guide was not agreed to: the phone number and avatar cannot be used.',
    successTitle: 'Logged in',
    successMessage: 'The login is confirmed. Continue on your computer.',
    cancelledTitle: 'Login cancelled',
    cancelledMessage: 'The web page on your computer will not log in.',
    close: 'Close',
    retry: 'Try again',
    scanAgain: 'Scan again',
    homeTitle: 'Scan to log in',
    homeMessage: 'Scan the login QR code shown on the web page on your computer.',
    scan: 'Scan',
    startedFrom: 'Login started from',
    browserOn: '{browser} on {os}',
    unknownPlace: 'unknown location',
    justNow: 'just now',
    minutesAgo: '{n} min ago',
    sourceWarning: 'This QR code was read from an image or your album. Confirm only if you opened this site\'s login page on your computer just now; if someone sent you this code, tap "This wasn\'t me".',
    linkWarning: 'This login was opened from a link. Confirm only if you started it on this phone just now.',
    pickNumber: 'Tap the number shown on your computer',
    notMe: 'This wasn\'t me',
    reportedTitle: 'Cancelled and reported',
    reportedMessage: 'This login was cancelled: the web page will not log in. If someone asked you to scan this code, ignore them.',
  },
}

// Errors of the mini-program API (docs/design.md §5), and the mini program's own.
var ERRORS = {
  zh: {
    ticket_expired: ['二维码已过期', '请在电脑上刷新二维码后重新扫码。'],
    ticket_not_found: ['二维码已失效', '请在电脑上刷新二维码后重新扫码。'],
    ticket_taken: ['二维码已被他人扫描', '请在电脑上刷新二维码后重新扫码。'],
    ticket_not_scanned: ['请重新扫码', '请在电脑上刷新二维码后重新扫码。'],
    not_scanner: ['请重新扫码', '这个二维码由另一位用户扫描。'],
    wrong_mini_program: ['请使用正确的小程序', '该网站使用另一个小程序登录，请用微信“扫一扫”重新扫码。'],
    phone_required: ['需要手机号', '该网站需要你的手机号才能登录。'],
    invalid_phone_code: ['手机号授权失败', '请重新授权手机号。'],
    nickname_refused: ['昵称不可用', '这个昵称未通过微信的内容安全检查，请换一个，或不填昵称。'],
    phone_quota_exhausted: ['暂时无法获取手机号', '该网站现在无法通过微信获取手机号（不是你拒绝了授权），请稍后再试。'],
    user_blocked: ['账号已被停用', '该网站已停用你的账号，如有疑问请联系网站管理员。'],
    signup_disabled: ['暂不开放注册', '该网站只允许已有用户登录。'],
    wechat_unavailable: ['微信服务暂时不可用', '请稍后重试。'],
    wechat_rate_limited: ['请求过于频繁', '请稍后重试。'],
    wechat_risky_user: ['无法登录', '微信判定当前账号存在风险，暂时无法登录。'],
    wechat_ip_not_whitelisted: ['网站暂时无法登录', '该网站的服务器未在微信登记（IP 白名单），请稍后重试或联系网站管理员。'],
    invalid_qr: ['无法识别的二维码', '这不是本服务的登录二维码。'],
    scan_source_refused: ['请用“扫一扫”扫码', '该网站不接受从图片或相册识别的电脑登录二维码，请用微信“扫一扫”直接扫描电脑屏幕上的二维码。'],
    number_mismatch: ['数字不一致，登录已取消', '你选的数字与电脑上显示的不同。如果不是你本人在登录，请忽略这个二维码。'],
    number_required: ['请选择数字', '请选择电脑上显示的数字后再确认。'],
    network: ['网络连接失败', '请检查网络后重试。'],
    unknown: ['登录失败', '请稍后重试。'],
  },
  en: {
    ticket_expired: ['QR code expired', 'Refresh the QR code on your computer and scan it again.'],
    ticket_not_found: ['QR code no longer valid', 'Refresh the QR code on your computer and scan it again.'],
    ticket_taken: ['Scanned by someone else', 'Refresh the QR code on your computer and scan it again.'],
    ticket_not_scanned: ['Scan again', 'Refresh the QR code on your computer and scan it again.'],
    not_scanner: ['Scan again', 'Another person scanned this QR code.'],
    wrong_mini_program: ['Wrong mini program', 'This site logs in with another mini program: scan the QR code with WeChat\'s "Scan".'],
    phone_required: ['Phone number needed', 'This site needs your phone number to log in.'],
    invalid_phone_code: ['Phone number not received', 'Please share your phone number again.'],
    nickname_refused: ['Nickname not allowed', "WeChat's content security refused this nickname: choose another, or none."],
    phone_quota_exhausted: [
      'Phone number unavailable',
      'This site cannot get phone numbers from WeChat right now (you did not decline). Please try again later.',
    ],
    user_blocked: ['Account blocked', 'This site has blocked your account; contact its administrator.'],
    signup_disabled: ['Sign-up closed', 'This site accepts only existing users.'],
    wechat_unavailable: ['WeChat is unavailable', 'Please try again in a moment.'],
    wechat_rate_limited: ['Too many attempts', 'Please try again in a moment.'],
    wechat_risky_user: ['Cannot log in', 'WeChat flagged this account as at risk.'],
    wechat_ip_not_whitelisted: ['This site cannot log you in now', 'WeChat does not accept this site\'s server yet (IP whitelist); try again later or contact the site.'],
    invalid_qr: ['Not a login QR code', 'This QR code is not a login code of this service.'],
    scan_source_refused: ['Scan it with the camera', 'This site does not accept a computer\'s login QR code read from an image or the album: scan the code on the computer\'s screen with WeChat\'s "Scan".'],
    number_mismatch: ['Wrong number: login cancelled', 'The number you picked is not the one on the computer. If you were not logging in yourself, ignore this QR code.'],
    number_required: ['Pick the number', 'Pick the number shown on your computer, then confirm.'],
    network: ['No connection', 'Check the network and try again.'],
    unknown: ['Login failed', 'Please try again in a moment.'],
  },
}

// Errors worth a "try again" button: nothing is wrong with the QR code itself.
var TRANSIENT = ['wechat_unavailable', 'wechat_rate_limited', 'wechat_ip_not_whitelisted', 'network', 'unknown', 'invalid_phone_code', 'number_required', 'phone_quota_exhausted']
// Errors about the person, not the QR code: scanning again would not help.
var PERSONAL = ['user_blocked', 'signup_disabled', 'wechat_risky_user', 'number_mismatch']

function language() {
  var lang = ''
  try {
    lang = wx.getAppBaseInfo ? wx.getAppBaseInfo().language : wx.getSystemInfoSync().language
  } catch (e) {
    lang = ''
  }
  return /^zh/i.test(lang || 'zh') ? 'zh' : 'en'
}

function texts(lang) {
  return MESSAGES[lang] || MESSAGES.zh
}

function fill(template, values) {
  return template.replace(/\{(\w+)\}/g, function (_, name) {
    return values[name] === undefined ? '' : String(values[name])
  })
}

/**
 * Where a login was started, as one line: "Windows 上的 Chrome · 广东 深圳 ·
 * shop.example.com · 刚刚" (the scan's `context`, issue 20).
 */
function startedFrom(context, lang) {
  var t = texts(lang)
  context = context || {}
  var parts = []
  if (context.browser && context.os) parts.push(fill(t.browserOn, { browser: context.browser, os: context.os }))
  else if (context.browser || context.os) parts.push(context.browser || context.os)
  parts.push(context.location || t.unknownPlace)
  if (context.site) parts.push(context.site)
  var ago = context.started_s_ago
  if (typeof ago === 'number') parts.push(ago < 60 ? t.justNow : fill(t.minutesAgo, { n: Math.floor(ago / 60) }))
  return parts.join(' · ')
}

function error(code, lang) {
  var table = ERRORS[lang] || ERRORS.zh
  var entry = table[code] || table.unknown
  var action = 'scan' // "scan again"
  if (TRANSIENT.indexOf(code) >= 0 || !table[code]) action = 'retry'
  else if (PERSONAL.indexOf(code) >= 0) action = 'none'
  return { code: code, title: entry[0], message: entry[1], action: action }
}

module.exports = {
  language: language,
  texts: texts,
  error: error,
  startedFrom: startedFrom,
  MESSAGES: MESSAGES,
  ERRORS: ERRORS,
}
