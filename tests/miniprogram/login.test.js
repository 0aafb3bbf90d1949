/**
 * The login mini program's confirm page (miniprogram/pages/login), run by
 * miniprogram-simulate with the official WXML compiler, against the real portal and
 * the fake WeChat over HTTP (see wx-backend.js). tests/test_miniprogram.py starts
 * them, prepares the pools and runs this file; the environment says where they are:
 *
 *   PORTAL_API_BASE    the mini program's API base (the portal's apex)
 *   PORTAL_DOMAIN      the portal's domain (pool hosts are {slug}.{domain})
 *   PORTAL_POOLS       JSON {slug: pool url} of acme, phoneco (phone required), other
 *                      (served by another mini program)
 *   PORTAL_MP_APPID    the mini program's AppID (the platform's default one)
 *   PORTAL_FLOW_TICKET a ticket of acme whose PC side the Python test is watching
 *   PORTAL_BLOCKED_USER a WeChat user blocked in acme
 *   FAKE_WECHAT_URL    the fake WeChat (for its /_fake/ controls)
 *   PORTAL_MP_SNAPSHOTS where to write each screen's HTML for the screenshots (optional)
 */
const fs = require('fs')
const path = require('path')
const simulate = require('miniprogram-simulate')
const backend = require('./wx-backend')
const builtins = require('./builtins')

const ROOT = path.resolve(__dirname, '../../miniprogram')
const PAGE = path.join(ROOT, 'pages/login/index')
const HOME = path.join(ROOT, 'pages/index/index')
const AVATAR_FILE = path.join(ROOT, 'images/avatar.png') // stands in for chooseAvatar's temporary file
const config = require(path.join(ROOT, 'config'))
const i18n = require(path.join(ROOT, 'utils/i18n'))
const api = require(path.join(ROOT, 'utils/api'))

const env = process.env
const POOLS = JSON.parse(env.PORTAL_POOLS || '{}')
const SNAPSHOTS = env.PORTAL_MP_SNAPSHOTS || ''

backend.install(global.wx)

// Loaded once: jest's module registry ignores the require.cache deletion with which
// miniprogram-simulate re-runs a page's code, so each test renders a new instance.
let pageId
let homeId

beforeAll(() => {
  builtins.install()
  pageId = simulate.load(PAGE, { rootPath: ROOT })
  homeId = simulate.load(HOME, { rootPath: ROOT })
  if (!env.PORTAL_API_BASE) throw new Error('run me from tests/test_miniprogram.py (PORTAL_API_BASE unset)')
  // What a deployment writes into miniprogram/config.js, here for the test portal.
  Object.assign(config, {
    apiBase: env.PORTAL_API_BASE,
    appid: env.PORTAL_MP_APPID,
    qrPrefixes: [env.PORTAL_QR_PREFIX], // the default mini program's one link rule
  })
  backend.requestDomains([env.PORTAL_API_BASE]) // its one request domain
})

beforeEach(() => backend.reset('alice'))

// --- helpers -------------------------------------------------------------------

async function waitFor(check, what, timeout = 10000) {
  const deadline = Date.now() + timeout
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await simulate.sleep(10)
  }
}

/** Opens the confirm page as WeChat would for `options`; resolves once onLoad is done. */
async function open(options) {
  const page = simulate.render(pageId)
  page.attach(document.createElement('parent-wrapper'))
  await page.instance.onLoad(options)
  return page
}

function linkOptions(ticket) {
  // The "scan a normal link QR code" rule: q = the URL-encoded QR content, plus the scan time.
  return { q: encodeURIComponent(ticket.qrcode.content), scancode_time: String(Math.floor(Date.now() / 1000)) }
}

function has(page, selector) {
  return !!page.querySelector(selector)
}

function text(page, selector) {
  const node = page.querySelector(selector)
  return node ? node.dom.textContent.trim() : null
}

async function tap(page, selector, until) {
  const node = page.querySelector(selector)
  if (!node) throw new Error(`no ${selector} on the page (state ${page.data.state})`)
  node.dispatchEvent('tap')
  await waitFor(until, `${selector} to take effect`)
}

// The confirm and phone buttons are form-type="submit": WeChat submits the form with
// the nickname input's value as its own check left it (the page must not read bindinput).
// miniprogram-simulate has no form submission, so the test sends the submit a tap makes.
async function submit(page, action, nickname, until) {
  const button = page.querySelector(action === 'phone' ? '#phone' : '#confirm')
  if (!button) throw new Error(`no ${action} button on the page (state ${page.data.state})`)
  expect(button.dom.getAttribute('form-type')).toBe('submit')
  page.querySelector('#form').dispatchEvent('submit', {
    detail: { value: { nickname: nickname || '' }, target: { id: action, dataset: { action } } },
  })
  if (until) await waitFor(until, `the ${action} submit to take effect`)
}

async function confirm(page, until, nickname = '') {
  return submit(page, 'confirm', nickname, until)
}

async function createTicket(slug = 'acme') {
  const res = await backend.httpRequest({ url: `${POOLS[slug]}/api/qrcode`, method: 'POST', data: {} })
  expect(res.statusCode).toBe(201)
  return res.data
}

async function ticketStatus(slug, ticket) {
  const res = await backend.httpRequest({
    url: `${POOLS[slug]}/api/qrcode/${ticket.ticket}/status`,
    header: { 'x-ticket-secret': ticket.secret },
  })
  return res.data.status
}

/** Another WeChat user's phone, calling the mini-program API directly (like tests/phone.py). */
async function otherPhone(user) {
  const res = await backend.httpRequest({
    url: `${env.PORTAL_API_BASE}/api/mp/session`,
    method: 'POST',
    data: { appid: env.PORTAL_MP_APPID, code: `${user}.${backend.random()}` },
  })
  const auth = { authorization: `Bearer ${res.data.session_token}` }
  const call = (ticket, action) =>
    backend.httpRequest({
      url: `${env.PORTAL_API_BASE}/api/mp/tickets/${ticket.ticket}/${action}`,
      method: 'POST',
      data: {},
      header: auth,
    })
  return { scan: (t) => call(t, 'scan'), cancel: (t) => call(t, 'cancel') }
}

async function fakeWeChat(pathname, body) {
  const res = await backend.httpRequest({ url: `${env.FAKE_WECHAT_URL}${pathname}`, method: 'POST', data: body })
  expect(res.statusCode).toBe(200)
}

/** The screen's HTML and styles, for tests/test_miniprogram.py to screenshot in Chromium. */
function snapshot(page, name) {
  if (!SNAPSHOTS) return
  const css = Array.from(document.querySelectorAll('style')).map((s) => s.textContent).join('\n')
  fs.mkdirSync(SNAPSHOTS, { recursive: true })
  fs.writeFileSync(path.join(SNAPSHOTS, `${name}.json`), JSON.stringify({ html: page.dom.outerHTML, css }))
}

function expectError(page, code) {
  expect(page.data.state).toBe('error')
  expect(page.querySelector('#error').dom.getAttribute('data-code')).toBe(code)
  const expected = i18n.error(code, page.data.lang)
  expect(text(page, '#error-title')).toBe(expected.title)
  expect(text(page, '#error-message')).toBe(expected.message)
}

// --- the flows ----------------------------------------------------------------

test('full scan and confirm of the ticket the PC page is waiting on', async () => {
  const ticket = env.PORTAL_FLOW_TICKET
  expect(ticket).toBeTruthy()
  const content = `${env.PORTAL_QR_PREFIX}${ticket}` // acme is on the default mini program
  const page = await open({ q: encodeURIComponent(content) })
  expect(page.data.state).toBe('confirm')
  expect(text(page, '#pool-name')).toBe('Acme 示例')
  expect(text(page, '#client-name')).toBe('登录 Acme 商城') // the website asking
  expect(page.querySelector('#logo').dom.getAttribute('src')).toMatch(/\/logo\?v=/)
  expect(text(page, '#confirm')).toBe('确认登录')
  expect(has(page, '#phone')).toBe(false)
  // The current WeChat profile APIs: the chooseAvatar button and the nickname input.
  expect(page.querySelector('#avatar').dom.getAttribute('open-type')).toBe('chooseAvatar')
  expect(page.querySelector('#nickname').dom.getAttribute('type')).toBe('nickname')
  expect(backend.state.logins).toBe(1)
  snapshot(page, 'mp-confirm')

  // The optional profile: a nickname typed in the nickname input (sent with the confirm's submit).
  // chooseAvatar: a temporary file on the phone (here on disk), uploaded at once.
  page.querySelector('#avatar').dispatchEvent('chooseavatar', { detail: { avatarUrl: AVATAR_FILE } })
  await waitFor(() => page.data.avatarUrl === AVATAR_FILE, 'the chosen avatar to show') // while it uploads
  await confirm(page, () => page.data.state === 'success', '小程序用户 Alice')
  expect(text(page, '#success-title')).toBe('登录成功')
  snapshot(page, 'mp-success')
  // Every call went to the one API base, and the session was reused.
  expect(backend.state.requests.map((r) => [r.method, r.url.replace(env.PORTAL_API_BASE, ''), r.status])).toEqual([
    ['POST', '/api/mp/session', 200],
    ['POST', `/api/mp/tickets/${ticket}/scan`, 200],
    ['UPLOAD', '/api/mp/avatar', 201],
    ['POST', `/api/mp/tickets/${ticket}/confirm`, 200],
  ])
})

test('a mini-program code opens the page with scene = the ticket', async () => {
  const ticket = await createTicket()
  const page = await open({ scene: encodeURIComponent(ticket.ticket) })
  expect(page.data.state).toBe('confirm')
  expect(has(page, '#client-name')).toBe(false) // the pool's default client: no site name
  await confirm(page, () => page.data.state === 'success')
  expect(await ticketStatus('acme', ticket)).toBe('confirmed')
})

test('cancel tells the PC page', async () => {
  const ticket = await createTicket()
  const page = await open(linkOptions(ticket))
  await tap(page, '#cancel', () => page.data.state === 'cancelled')
  expect(text(page, '#cancelled-title')).toBe('已取消登录')
  expect(await ticketStatus('acme', ticket)).toBe('cancelled')
})

test('the session is kept, and renewed when it expires or the portal forgot it', async () => {
  const first = await open(linkOptions(await createTicket()))
  expect(first.data.state).toBe('confirm')
  expect(backend.state.logins).toBe(1)
  // Kept: another scan does not call wx.login again.
  const second = await open(linkOptions(await createTicket()))
  expect(second.data.state).toBe('confirm')
  expect(backend.state.logins).toBe(1)
  // Expired by its own clock: renewed before the call.
  const stored = backend.state.storage.get(api.STORAGE_KEY)
  backend.state.storage.set(api.STORAGE_KEY, { ...stored, expiresAt: Date.now() - 1000 })
  expect((await open(linkOptions(await createTicket()))).data.state).toBe('confirm')
  expect(backend.state.logins).toBe(2)
  // Forgotten by the portal (401 invalid_session): renewed and the call retried once.
  backend.state.storage.set(api.STORAGE_KEY, { token: 'no-such-session', expiresAt: Date.now() + 3600e3 })
  backend.state.requests.length = 0
  const page = await open(linkOptions(await createTicket()))
  expect(page.data.state).toBe('confirm')
  expect(backend.state.logins).toBe(3)
  expect(backend.state.requests.map((r) => r.status)).toEqual([401, 200, 200])
  await confirm(page, () => page.data.state === 'success')
})

test('phone required: the getPhoneNumber button, a refusal, then the phone shared', async () => {
  backend.reset('bob')
  const ticket = await createTicket('phoneco')
  const page = await open(linkOptions(ticket))
  expect(page.data.state).toBe('confirm')
  expect(page.data.phoneRequired).toBe(true)
  expect(has(page, '#confirm')).toBe(false)
  expect(text(page, '#phone')).toBe('授权手机号并登录')
  expect(page.querySelector('#phone').dom.getAttribute('open-type')).toBe('getPhoneNumber')
  // The person refuses in WeChat's phone dialog: no code, the page explains.
  expect(text(page, '#notice')).toBe(i18n.texts('zh').phoneNeeded)
  page.querySelector('#phone').dispatchEvent('getphonenumber', { detail: { errMsg: 'getPhoneNumber:fail user deny' } })
  await waitFor(() => page.data.notice === i18n.texts('zh').phoneDenied, 'the notice')
  expect(text(page, '#notice')).toBe(i18n.texts('zh').phoneDenied)
  snapshot(page, 'mp-phone-required')
  page.querySelector('#phone').dispatchEvent('getphonenumber', backend.phoneEvent('13800138000'))
  await waitFor(() => page.data.state === 'success', 'success')
  expect(await ticketStatus('phoneco', ticket)).toBe('confirmed')
})

test('phone quota spent (errno 1400001): "the site cannot get a number now", not "you declined"', async () => {
  backend.reset('quota_user')
  const ticket = await createTicket('phoneco')
  const page = await open(linkOptions(ticket))
  expect(page.data.phoneRequired).toBe(true)
  // The mini program's quota is spent: WeChat's button gives an errno and no code.
  await fakeWeChat('/_fake/phonequota', { appid: env.PORTAL_MP_APPID, quota: 0 })
  try {
    const res = await backend.httpRequest({
      url: `${env.FAKE_WECHAT_URL}/_fake/phonecode`,
      method: 'POST',
      data: { appid: env.PORTAL_MP_APPID, phone: '13800138000' },
    })
    expect(res.data.errno).toBe(1400001)
    page.querySelector('#phone').dispatchEvent('getphonenumber', { detail: res.data })
    await waitFor(() => page.data.state === 'error', 'the error')
    expectError(page, 'phone_quota_exhausted')
    expect(text(page, '#error-message')).not.toBe(i18n.texts('zh').phoneDenied)
    expect(has(page, '#retry')).toBe(true) // transient: the site may get quota again
    // The portal was told (it counts it for the pool's chart); nothing was confirmed.
    const confirm = backend.state.requests.filter((r) => r.url.endsWith('/confirm'))
    expect(confirm.map((r) => r.status)).toEqual([503])
    expect(await ticketStatus('phoneco', ticket)).toBe('scanned')
  } finally {
    await fakeWeChat('/_fake/phonequota', { appid: env.PORTAL_MP_APPID, quota: null })
  }
})

test('privacy guide: the phone button waits for consent, and a refusal is said as such', async () => {
  backend.reset('pia')
  const ticket = await createTicket('phoneco')
  const page = await open(linkOptions(ticket))
  expect(has(page, '#privacy')).toBe(false)
  // Before the phone dialog, WeChat needs the person's consent to the privacy guide.
  const first = backend.needPrivacy('getPhoneNumber')
  await waitFor(() => page.data.privacy, 'the privacy popup')
  expect(page.querySelector('#privacy-agree').dom.getAttribute('open-type')).toBe('agreePrivacyAuthorization')
  await tap(page, '#privacy-disagree', () => !page.data.privacy)
  expect(await first).toEqual({ event: 'disagree' })
  // Refused: WeChat fails the button with errno 104; the page says why, sends nothing.
  page.querySelector('#phone').dispatchEvent('getphonenumber', {
    detail: { errno: 104, errMsg: 'getPhoneNumber:fail privacy permission is not authorized' },
  })
  await waitFor(() => page.data.notice === i18n.texts('zh').privacyDenied, 'the notice')
  expect(backend.state.requests.filter((r) => r.url.endsWith('/confirm'))).toEqual([])
  // Agreed: the phone button goes on.
  const second = backend.needPrivacy('getPhoneNumber')
  await waitFor(() => page.data.privacy, 'the privacy popup again')
  page.querySelector('#privacy-agree').dispatchEvent('agreeprivacyauthorization', {})
  expect(await second).toEqual({ buttonId: 'privacy-agree', event: 'agree' })
  page.querySelector('#phone').dispatchEvent('getphonenumber', backend.phoneEvent('13800138000'))
  await waitFor(() => page.data.state === 'success', 'success')
})

test('the nickname sent is the one the form submits, as WeChat left it after its check', async () => {
  // The input is in a form; the buttons submit it; nothing reads bindinput.
  backend.reset('erin')
  let page = await open(linkOptions(await createTicket()))
  expect(page.querySelector('#nickname').dom.getAttribute('name')).toBe('nickname')
  // Typed, then cleared by WeChat's check after blur: the submit carries ''.
  page.querySelector('#nickname').dispatchEvent('input', { detail: { value: '被清空的昵称' } })
  await confirm(page, () => page.data.state === 'success', '')
  let sent = backend.state.requests.filter((r) => r.url.endsWith('/confirm'))
  expect(sent.map((r) => r.data)).toEqual([{}])

  // A phone button submits too: the nickname is taken at the tap, the login goes on
  // when WeChat answers with the phone code.
  backend.reset('frank')
  page = await open(linkOptions(await createTicket('phoneco')))
  await submit(page, 'phone', '手机用户 Frank')
  expect(page.data.state).toBe('confirm') // no login yet: WeChat has not answered
  expect(backend.state.requests.filter((r) => r.url.endsWith('/confirm'))).toEqual([])
  page.querySelector('#phone').dispatchEvent('getphonenumber', backend.phoneEvent('13800138001'))
  await waitFor(() => page.data.state === 'success', 'the phone login')
  sent = backend.state.requests.filter((r) => r.url.endsWith('/confirm'))
  expect(sent.map((r) => r.data.nickname)).toEqual(['手机用户 Frank'])
  expect(typeof sent[0].data.phone_code).toBe('string')
})

test('a nickname refused by content security: the field is cleared, another one logs in', async () => {
  backend.reset('nick')
  const ticket = await createTicket()
  const page = await open(linkOptions(ticket))
  // What WeChat's msgSecCheck calls risky (the fake's blocklist): nothing is written.
  await confirm(page, () => page.data.state === 'confirm' && page.data.notice !== '', 'a risky name')
  expect(page.data.notice).toBe(i18n.error('nickname_refused', 'zh').message)
  expect(page.data.nickname).toBe('')
  expect(await ticketStatus('acme', ticket)).toBe('scanned')
  await confirm(page, () => page.data.state === 'success', '安全的昵称')
  const confirms = backend.state.requests.filter((r) => r.url.endsWith('/confirm')).map((r) => r.status)
  expect(confirms).toEqual([400, 200])
})

test('phone_required from confirm switches to the phone button', async () => {
  backend.reset('carol')
  const ticket = await createTicket('phoneco')
  const page = await open(linkOptions(ticket))
  // An older page state (the pool began to require the phone after the scan).
  page.setData({ phoneRequired: false, notice: '' })
  await confirm(page, () => page.data.state === 'confirm' && page.data.phoneRequired)
  expect(text(page, '#notice')).toBe(i18n.texts('zh').phoneNeeded)
  expect(has(page, '#phone')).toBe(true)
})

test('expired (a final ticket)', async () => {
  const ticket = await createTicket()
  const dave = await otherPhone('dave')
  expect((await dave.scan(ticket)).statusCode).toBe(200)
  expect((await dave.cancel(ticket)).statusCode).toBe(200)
  const page = await open(linkOptions(ticket))
  expectError(page, 'ticket_expired')
  expect(has(page, '#scan-again')).toBe(true)
  snapshot(page, 'mp-expired')
  // "Scan again" scans and opens the confirm page for the new code.
  const next = await createTicket()
  backend.state.scanResult = { result: next.qrcode.content, scanType: 'QR_CODE' }
  page.querySelector('#scan-again').dispatchEvent('tap')
  await waitFor(() => backend.state.navigations.length, 'the navigation')
  expect(backend.state.navigations).toEqual([
    { api: 'redirectTo', url: `/pages/login/index?q=${encodeURIComponent(next.qrcode.content)}` },
  ])
})

test('taken by someone else', async () => {
  const ticket = await createTicket()
  expect((await (await otherPhone('erin')).scan(ticket)).statusCode).toBe(200)
  const page = await open(linkOptions(ticket))
  expectError(page, 'ticket_taken')
  snapshot(page, 'mp-taken')
})

test('a QR code of a pool served by another mini program', async () => {
  const ticket = await createTicket('other')
  // Its link QR is under that mini program's own rule: this one does not accept it (and
  // WeChat would not open this one for it); its mini-program code is refused by the portal.
  expectError(await open(linkOptions(ticket)), 'invalid_qr')
  const page = await open({ scene: ticket.ticket })
  expectError(page, 'wrong_mini_program')
  snapshot(page, 'mp-wrong-mini-program')
})

test('a blocked user', async () => {
  backend.reset(env.PORTAL_BLOCKED_USER)
  const ticket = await createTicket()
  const page = await open(linkOptions(ticket))
  expect(page.data.state).toBe('confirm')
  await confirm(page, () => page.data.state === 'error')
  expectError(page, 'user_blocked')
  expect(has(page, '#scan-again') || has(page, '#retry')).toBe(false) // only "close" helps
  snapshot(page, 'mp-blocked')
  expect(await ticketStatus('acme', ticket)).toBe('scanned')
})

test('WeChat unavailable, then "try again" works', async () => {
  const ticket = await createTicket()
  // WeChat answers "system busy" to every attempt of the portal's client (1 + 2 retries).
  await fakeWeChat('/_fake/faults', { path: '/sns/jscode2session', errcode: -1, times: 3 })
  const page = await open(linkOptions(ticket))
  expectError(page, 'wechat_unavailable')
  expect(has(page, '#retry')).toBe(true)
  snapshot(page, 'mp-wechat-unavailable')
  await tap(page, '#retry', () => page.data.state === 'confirm')
})

test('other WeChat refusals: risky user, rate limit', async () => {
  backend.reset('risky_user')
  expectError(await open(linkOptions(await createTicket())), 'wechat_risky_user')
  backend.reset('frank')
  await fakeWeChat('/_fake/faults', { path: '/sns/jscode2session', errcode: 45011 })
  expectError(await open(linkOptions(await createTicket())), 'wechat_rate_limited')
})

test('only QR codes under the published link rules are accepted', async () => {
  const ticket = await createTicket()
  const foreign = [
    `${POOLS.acme}/q/${ticket.ticket}`, // a pool host's prefix: another mini program's rule
    `${env.PORTAL_QR_PREFIX}${ticket.ticket}/x`,
    `${env.PORTAL_QR_PREFIX.replace('http:', 'https:')}${ticket.ticket}`,
    `https://evil.example.com/q/${ticket.ticket}`,
    `http://acme.localhost.evil.com/q/${ticket.ticket}`,
    `http://a.b.${env.PORTAL_DOMAIN}/q/${ticket.ticket}`,
    `${POOLS.acme}/oidc/auth?x=${ticket.ticket}`,
    'not a url',
  ]
  for (const content of foreign) {
    const page = await open({ q: encodeURIComponent(content) })
    expectError(page, 'invalid_qr')
  }
  expectError(await open({ scene: 'short' }), 'invalid_qr')
  expectError(await open({}), 'invalid_qr')
  expect(backend.state.requests).toEqual([]) // nothing was sent anywhere
})

test('the mini program calls only its request domain, never a pool host', async () => {
  const ticket = await createTicket()
  const page = await open(linkOptions(ticket))
  expect(page.data.state).toBe('confirm')
  const hosts = new Set(backend.state.requests.map((r) => new URL(r.url).origin))
  expect([...hosts]).toEqual([env.PORTAL_API_BASE])
  // As WeChat does: a request to any other domain fails before it leaves the phone.
  const refused = await new Promise((resolve) =>
    wx.request({ url: `${POOLS.acme}/api/mp/session`, method: 'POST', data: {}, success: resolve, fail: resolve })
  )
  expect(refused.errMsg).toBe('request:fail url not in domain list')
})

test('English by the system language', async () => {
  backend.reset('grace', 'en')
  const ticket = await createTicket()
  const page = await open(linkOptions(ticket))
  expect(text(page, '#confirm')).toBe('Confirm login')
  expect(text(page, '#cancel')).toBe('Cancel')
  snapshot(page, 'mp-confirm-en')
  const taken = await open(linkOptions(ticket))
  backend.reset('heidi', 'en')
  const other = await open(linkOptions(ticket))
  expect(taken.data.state).toBe('confirm') // the same user may open it again
  expectError(other, 'ticket_taken')
  expect(text(other, '#error-title')).toBe('Scanned by someone else')
})

test('every error of the mini-program API has a Chinese and an English text', () => {
  const codes = [
    'ticket_expired', 'ticket_not_found', 'ticket_taken', 'wrong_mini_program', 'phone_required',
    'user_blocked', 'signup_disabled', 'wechat_unavailable', 'wechat_rate_limited',
    'wechat_risky_user', 'invalid_phone_code', 'not_scanner', 'ticket_not_scanned', 'invalid_qr', 'network',
    'wechat_ip_not_whitelisted', 'scan_source_refused', 'number_mismatch', 'number_required',
  ]
  for (const lang of ['zh', 'en']) {
    for (const code of codes) expect(i18n.ERRORS[lang][code]).toBeDefined()
    expect(Object.keys(i18n.MESSAGES[lang]).sort()).toEqual(Object.keys(i18n.MESSAGES.zh).sort())
  }
  expect(Object.keys(i18n.ERRORS.en).sort()).toEqual(Object.keys(i18n.ERRORS.zh).sort())
})

// --- issue 20: where the login was started, launch scenes, number matching, "this wasn't me"

const CHROME_WINDOWS =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
const WECHAT_IPHONE =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
  'Mobile/15E148 MicroMessenger/8.0.44(0x18002c2c) NetType/WIFI Language/zh_CN'

/** A ticket made by a browser with these headers (its User-Agent, the page it is on). */
async function ticketFrom(slug, header) {
  const res = await backend.httpRequest({ url: `${POOLS[slug]}/api/qrcode`, method: 'POST', data: {}, header })
  expect(res.statusCode).toBe(201)
  return res.data
}

async function pcStatus(slug, ticket) {
  const res = await backend.httpRequest({
    url: `${POOLS[slug]}/api/qrcode/${ticket.ticket}/status`,
    header: { 'x-ticket-secret': ticket.secret },
  })
  return res.data
}

/** One Redis command over RESP (the test's Redis; PORTAL_TEST_REDIS_URL): time passing. */
function redisCommand(...args) {
  const net = require('net')
  const url = new URL(env.PORTAL_TEST_REDIS_URL)
  const db = Number((url.pathname || '/0').slice(1) || url.searchParams.get('db') || 0)
  const encode = (parts) => `*${parts.length}\r\n` + parts.map((p) => `$${Buffer.byteLength(String(p))}\r\n${p}\r\n`).join('')
  return new Promise((resolve, reject) => {
    const socket = url.protocol === 'unix:' ? net.connect(url.pathname) : net.connect(Number(url.port || 6379), url.hostname)
    let data = ''
    socket.on('data', (chunk) => {
      data += chunk
      if (data.split('\r\n').length > 2) {
        socket.end()
        resolve(data)
      }
    })
    socket.on('error', reject)
    socket.write(encode(['SELECT', url.protocol === 'unix:' ? 0 : db]) + encode(args))
  })
}

test('the confirm screen says where the login was started, in Chinese and English', async () => {
  const header = { 'user-agent': CHROME_WINDOWS, referer: 'https://shop.example.com/login' }
  const page = await open(linkOptions(await ticketFrom('acme', header)))
  expect(page.data.state).toBe('confirm')
  // The portal here is on loopback: a private address is an unknown place, never a guess.
  expect(text(page, '#started-from-text')).toBe('Windows 上的 Chrome · 未知地点 · shop.example.com · 刚刚')
  expect(has(page, '#warning')).toBe(false) // scanned with the camera (scene 1011)
  expect(text(page, '#not-me')).toBe('不是我本人操作')
  snapshot(page, 'mp-confirm-context')
  backend.reset('alice', 'en')
  const en = await open(linkOptions(await ticketFrom('acme', header)))
  expect(text(en, '#started-from-text')).toBe('Chrome on Windows · unknown location · shop.example.com · just now')
  expect(text(en, '#not-me')).toBe("This wasn't me")
  // The wording of older logins, and of what the parser did not recognise.
  expect(i18n.startedFrom({ browser: 'Safari', os: 'iOS', location: '广东 深圳', started_s_ago: 150 }, 'zh')).toBe(
    'iOS 上的 Safari · 广东 深圳 · 2 分钟前'
  )
  expect(i18n.startedFrom({ os: 'Android', started_s_ago: 59 }, 'en')).toBe('Android · unknown location · just now')
})

test('every launch scene: the camera, an image or the album, a link, none', async () => {
  const t = i18n.texts('zh')
  const cases = [
    [1011, null],
    [1047, null],
    [1012, t.sourceWarning],
    [1013, t.sourceWarning],
    [1048, t.sourceWarning],
    [1049, t.sourceWarning],
    [1065, t.linkWarning],
    [1194, t.linkWarning],
    [1001, null],
    [0, null], // WeChat could not say
  ]
  for (const [scene, warning] of cases) {
    backend.state.scene = scene
    const page = await open(linkOptions(await ticketFrom('acme', { 'user-agent': CHROME_WINDOWS })))
    expect(page.data.state).toBe('confirm')
    expect(page.data.scene).toBe(scene)
    expect(text(page, '#warning')).toBe(warning)
    if (scene === 1012) snapshot(page, 'mp-confirm-warned')
  }
  // WeChat's own browser on this phone: the long-press is the expected way, no warning.
  backend.state.scene = 1012
  const same = await open(linkOptions(await ticketFrom('acme', { 'user-agent': WECHAT_IPHONE })))
  expect(has(same, '#warning')).toBe(false)
  // A pool that refuses a computer's QR code from an image: the scan is refused.
  const strict = await ticketFrom('strict', { 'user-agent': CHROME_WINDOWS })
  const refused = await open(linkOptions(strict))
  expectError(refused, 'scan_source_refused')
  snapshot(refused, 'mp-scan-source-refused')
  expect(await ticketStatus('strict', strict)).toBe('pending')
  backend.state.scene = 1011 // the same code with the camera
  expect((await open(linkOptions(strict))).data.state).toBe('confirm')
})

test('number matching: the right number logs in', async () => {
  const ticket = await ticketFrom('guard', { 'user-agent': CHROME_WINDOWS })
  const page = await open(linkOptions(ticket))
  expect(page.data.numbers.length).toBe(3)
  expect(text(page, '#numbers .numbers-lead')).toBe('请选择电脑上显示的数字')
  const shown = (await pcStatus('guard', ticket)).number
  expect(page.data.numbers).toContain(shown)
  // Confirm before picking: asked to pick, nothing sent.
  const sent = backend.state.requests.length
  await confirm(page, () => page.data.notice === i18n.texts('zh').pickNumber)
  expect(backend.state.requests.length).toBe(sent)
  page.querySelector(`#number-${shown}`).dispatchEvent('tap')
  await waitFor(() => page.data.picked === shown, 'the pick')
  snapshot(page, 'mp-number-matching')
  await confirm(page, () => page.data.state === 'success')
  expect(await ticketStatus('guard', ticket)).toBe('confirmed')
})

test('number matching: a wrong number cancels the login', async () => {
  const ticket = await ticketFrom('guard', { 'user-agent': CHROME_WINDOWS })
  const page = await open(linkOptions(ticket))
  const shown = (await pcStatus('guard', ticket)).number
  const wrong = page.data.numbers.find((n) => n !== shown)
  page.querySelector(`#number-${wrong}`).dispatchEvent('tap')
  await waitFor(() => page.data.picked === wrong, 'the pick')
  await confirm(page, () => page.data.state === 'error')
  expectError(page, 'number_mismatch')
  expect(has(page, '#scan-again') || has(page, '#retry')).toBe(false)
  expect(await ticketStatus('guard', ticket)).toBe('cancelled')
})

test('number matching: the QR code expires while the person looks', async () => {
  const ticket = await ticketFrom('guard', { 'user-agent': CHROME_WINDOWS })
  const page = await open(linkOptions(ticket))
  const shown = (await pcStatus('guard', ticket)).number
  // Its lifetime is over (whatever hash tag the ticket's key carries: ticket:{TAG}REST).
  const expire = "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('HSET', k, 'exp', 0) end"
  await redisCommand('EVAL', expire, '0', `ticket:*${ticket.ticket.slice(8)}`)
  page.querySelector(`#number-${shown}`).dispatchEvent('tap')
  await waitFor(() => page.data.picked === shown, 'the pick')
  await confirm(page, () => page.data.state === 'error')
  expectError(page, 'ticket_expired')
  expect(await ticketStatus('guard', ticket)).toBe('expired')
})

test('"this wasn\'t me" cancels and reports the login', async () => {
  backend.state.scene = 1012
  const ticket = await ticketFrom('acme', { 'user-agent': CHROME_WINDOWS })
  const page = await open(linkOptions(ticket))
  await tap(page, '#not-me', () => page.data.state === 'reported')
  expect(text(page, '#reported-title')).toBe('已取消并报告')
  snapshot(page, 'mp-reported')
  expect(await ticketStatus('acme', ticket)).toBe('cancelled')
  const last = backend.state.requests[backend.state.requests.length - 1]
  expect([last.method, last.url.replace(env.PORTAL_API_BASE, ''), last.status]).toEqual([
    'POST',
    `/api/mp/tickets/${ticket.ticket}/cancel`,
    200,
  ])
  backend.reset('ivan', 'en')
  const en = await open(linkOptions(await ticketFrom('acme', {})))
  await tap(en, '#not-me', () => en.data.state === 'reported')
  expect(text(en, '#reported-title')).toBe('Cancelled and reported')
})

test('the home page scans a code and opens the confirm page', async () => {
  const home = simulate.render(homeId)
  home.attach(document.createElement('parent-wrapper'))
  home.instance.onLoad({})
  expect(home.querySelector('#scan').dom.textContent.trim()).toBe('扫一扫')
  // A mini-program code scanned from inside the mini program: WeChat gives its path.
  backend.state.scanResult = { scanType: 'WX_CODE', path: 'pages/login/index?scene=AbCdEfGhIjKlMnOp1234' }
  home.querySelector('#scan').dispatchEvent('tap')
  await waitFor(() => backend.state.navigations.length, 'the navigation')
  expect(backend.state.navigations).toEqual([{ api: 'navigateTo', url: '/pages/login/index?scene=AbCdEfGhIjKlMnOp1234' }])
})
