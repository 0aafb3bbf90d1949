/**
 * The `wx` runtime calls that reach the network, backed by the real portal and the
 * real fake WeChat over HTTP (no mock answers):
 *
 * - wx.request: a real HTTP request (node:http). `*.localhost` does not resolve
 *   everywhere, so it connects to PORTAL_CONNECT_HOST (127.0.0.1) and keeps the URL's
 *   host in the Host header, as a phone resolving the real name would.
 * - wx.login: a code of the fake WeChat's form, `USER.<random>`: the fake logs it in
 *   as WeChat user USER (the portal exchanges it at the fake's jscode2session).
 * - the getPhoneNumber button: an event whose detail.code is `DIGITS.<random>`, which
 *   the portal exchanges at the fake's getuserphonenumber.
 * - wx.uploadFile: the file at filePath (on this disk, as chooseAvatar's temporary file
 *   is on the phone) sent as multipart/form-data, a real HTTP request.
 *
 * Everything else the pages touch (storage, language, navigation) is a small local
 * stand-in that records what the page asked for.
 */
const http = require('http')
const crypto = require('crypto')
const fs = require('fs')
const path = require('path')

const CONNECT_HOST = process.env.PORTAL_CONNECT_HOST || '127.0.0.1'

const state = {
  user: 'alice',
  language: 'zh_CN',
  storage: new Map(),
  requests: [], // {method, url, status} of every wx.request
  logins: 0,
  navigations: [], // {api, url}
  exited: 0,
  scanResult: null, // what wx.scanCode answers
  scene: 1011, // the launch scene wx.getEnterOptionsSync answers (1011: the camera)
}

function random() {
  return crypto.randomBytes(4).toString('hex')
}

/** One real HTTP request; resolves {statusCode, data, header}. */
function httpRequest({ url, method = 'GET', data, header = {} }) {
  const target = new URL(url)
  const body = method === 'GET' || data === undefined ? null : Buffer.from(JSON.stringify(data))
  const headers = { host: target.host, ...header }
  if (body) {
    headers['content-length'] = String(body.length)
    headers['content-type'] = headers['content-type'] || 'application/json'
  }
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: CONNECT_HOST,
        port: target.port || 80,
        path: target.pathname + target.search,
        method,
        headers,
        timeout: 15000,
      },
      (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let parsed = text
          try {
            parsed = JSON.parse(text)
          } catch (e) {
            // not JSON: wx.request hands the text over as is
          }
          resolve({ statusCode: res.statusCode, data: parsed, header: res.headers })
        })
      }
    )
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    if (body) req.write(body)
    req.end()
  })
}

/** wx.uploadFile's request: the file as the multipart field `name`; resolves {statusCode, data: text}. */
function uploadRequest({ url, filePath, name, header = {}, formData = {} }) {
  const target = new URL(url)
  const boundary = `----wxupload${random()}${random()}`
  const parts = []
  for (const [key, value] of Object.entries(formData)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${key}"\r\n\r\n${value}\r\n`))
  }
  const file = fs.readFileSync(filePath)
  const type = /\.png$/i.test(filePath) ? 'image/png' : 'image/jpeg'
  parts.push(
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="${path.basename(filePath)}"\r\n` +
        `Content-Type: ${type}\r\n\r\n`
    ),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`)
  )
  const body = Buffer.concat(parts)
  const headers = {
    ...header,
    host: target.host,
    'content-type': `multipart/form-data; boundary=${boundary}`,
    'content-length': String(body.length),
  }
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: CONNECT_HOST, port: target.port || 80, path: target.pathname + target.search, method: 'POST', headers, timeout: 15000 },
      (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => resolve({ statusCode: res.statusCode, data: Buffer.concat(chunks).toString('utf8') }))
      }
    )
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end(body)
  })
}

function complete(options, ok, result) {
  const cb = ok ? options.success : options.fail
  if (typeof cb === 'function') cb(result)
  if (typeof options.complete === 'function') options.complete(result)
}

// The mini program's server domains (its admin's request / uploadFile 合法域名): as at
// WeChat, a wx.request or wx.uploadFile to any other origin fails on the phone.
const domains = new Set()

function requestDomains(list) {
  domains.clear()
  for (const origin of list) domains.add(new URL(origin).origin)
}

function refused(options, api) {
  let origin = null
  try {
    origin = new URL(options.url).origin
  } catch (e) {
    // not a URL: refused too
  }
  if (domains.size === 0 || domains.has(origin)) return false
  state.requests.push({ method: 'REFUSED', url: options.url, status: 0 })
  setTimeout(() => complete(options, false, { errMsg: `${api}:fail url not in domain list` }), 0)
  return true
}

function install(wx) {
  wx.request = (options) => {
    if (refused(options, 'request')) return { abort() {} }
    const method = (options.method || 'GET').toUpperCase()
    httpRequest({ url: options.url, method, data: options.data, header: options.header }).then(
      (res) => {
        state.requests.push({ method, url: options.url, status: res.statusCode, data: options.data })
        complete(options, true, { ...res, errMsg: 'request:ok' })
      },
      (err) => {
        state.requests.push({ method, url: options.url, status: 0 })
        complete(options, false, { errMsg: `request:fail ${err.message}` })
      }
    )
    return { abort() {} }
  }
  wx.uploadFile = (options) => {
    if (refused(options, 'uploadFile')) return { abort() {} }
    uploadRequest(options).then(
      (res) => {
        state.requests.push({ method: 'UPLOAD', url: options.url, status: res.statusCode })
        complete(options, true, { ...res, errMsg: 'uploadFile:ok' })
      },
      (err) => {
        state.requests.push({ method: 'UPLOAD', url: options.url, status: 0 })
        complete(options, false, { errMsg: `uploadFile:fail ${err.message}` })
      }
    )
    return { abort() {} }
  }
  wx.login = (options = {}) => {
    state.logins += 1
    setTimeout(() => complete(options, true, { code: `${state.user}.${random()}`, errMsg: 'login:ok' }), 0)
  }
  wx.getStorageSync = (key) => (state.storage.has(key) ? state.storage.get(key) : '')
  wx.setStorageSync = (key, value) => {
    state.storage.set(key, JSON.parse(JSON.stringify(value)))
  }
  wx.removeStorageSync = (key) => {
    state.storage.delete(key)
  }
  wx.getAppBaseInfo = () => ({ language: state.language, SDKVersion: '3.3.0' })
  wx.getAccountInfoSync = () => ({
    miniProgram: { appId: process.env.PORTAL_MP_APPID, envVersion: 'release', version: '1.0.0' },
  })
  wx.setNavigationBarTitle = () => {}
  wx.getEnterOptionsSync = () => ({ scene: state.scene, query: {}, path: 'pages/login/index' })
  wx.getLaunchOptionsSync = wx.getEnterOptionsSync
  for (const api of ['navigateTo', 'redirectTo', 'reLaunch']) {
    wx[api] = (options) => {
      state.navigations.push({ api, url: options.url })
      complete(options, true, { errMsg: `${api}:ok` })
    }
  }
  wx.scanCode = (options) => {
    if (state.scanResult) complete(options, true, { ...state.scanResult, errMsg: 'scanCode:ok' })
    else complete(options, false, { errMsg: 'scanCode:fail cancel' })
  }
  // The privacy guide: WeChat calls the page's handler before a protected API runs.
  wx.onNeedPrivacyAuthorization = (handler) => {
    state.privacyHandler = handler
  }
  wx.openPrivacyContract = (options = {}) => {
    state.navigations.push({ api: 'openPrivacyContract', url: '' })
    complete(options, true, { errMsg: 'openPrivacyContract:ok' })
  }
  wx.exitMiniProgram = (options = {}) => {
    state.exited += 1
    complete(options, true, { errMsg: 'exitMiniProgram:ok' })
  }
}

/** Resets the per-test state; `user` is the WeChat user wx.login logs in as. */
function reset(user = 'alice', language = 'zh_CN') {
  state.user = user
  state.language = language
  state.storage.clear()
  state.requests.length = 0
  state.navigations.length = 0
  state.logins = 0
  state.exited = 0
  state.scanResult = null
  state.privacyHandler = null
  state.scene = 1011
}

/** What WeChat does before a privacy-protected API (the phone button, chooseAvatar) while
 * the person has not agreed to the privacy guide: it calls the page's handler; resolves
 * with the page's answer ({event: 'agree' | 'disagree', buttonId?}). */
function needPrivacy(referrer) {
  return new Promise((resolve, reject) => {
    if (!state.privacyHandler) return reject(new Error('the page did not register wx.onNeedPrivacyAuthorization'))
    state.privacyHandler(resolve, { referrer })
  })
}

/** The getPhoneNumber button's event detail for phone number `digits`. */
function phoneEvent(digits) {
  return { detail: { code: `${digits}.${random()}`, errMsg: 'getPhoneNumber:ok' } }
}

module.exports = { install, reset, state, httpRequest, phoneEvent, random, requestDomains, needPrivacy }
