/**
 * The portal's mini-program API (docs/design.md §5): the session from wx.login, and the
 * ticket's scan / confirm / cancel. Every call goes to config.apiBase.
 *
 * Failures reject with {error, description, status}: `error` is the API's error code,
 * or "network" when the portal could not be reached.
 */
var config = require('../config')

var STORAGE_KEY = 'portal.session'
var MARGIN_MS = 60 * 1000 // renew a minute before the portal forgets the session

function appid() {
  if (config.appid) return config.appid
  return wx.getAccountInfoSync().miniProgram.appId
}

function request(method, path, data, token) {
  return new Promise(function (resolve, reject) {
    var header = { 'content-type': 'application/json' }
    if (token) header.authorization = 'Bearer ' + token
    wx.request({
      url: config.apiBase.replace(/\/+$/, '') + path,
      method: method,
      data: data || {},
      header: header,
      dataType: 'json',
      timeout: 15000,
      success: function (res) {
        var body = res.data && typeof res.data === 'object' ? res.data : {}
        if (res.statusCode >= 200 && res.statusCode < 300) {
          resolve(body)
        } else {
          reject({
            status: res.statusCode,
            error: body.error || (res.statusCode >= 500 ? 'wechat_unavailable' : 'unknown'),
            description: body.error_description || '',
          })
        }
      },
      fail: function (err) {
        reject({ status: 0, error: 'network', description: (err && err.errMsg) || '' })
      },
    })
  })
}

function wxLogin() {
  return new Promise(function (resolve, reject) {
    wx.login({
      timeout: 10000,
      success: function (res) {
        if (res.code) resolve(res.code)
        else reject({ status: 0, error: 'wechat_unavailable', description: res.errMsg || '' })
      },
      fail: function (err) {
        reject({ status: 0, error: 'network', description: (err && err.errMsg) || '' })
      },
    })
  })
}

function stored() {
  var session = wx.getStorageSync(STORAGE_KEY)
  if (session && session.token && session.expiresAt > Date.now() + MARGIN_MS) return session
  return null
}

function forget() {
  wx.removeStorageSync(STORAGE_KEY)
}

/** A fresh session from wx.login; a code WeChat says was used gets one more try. */
function login(retried) {
  return wxLogin()
    .then(function (code) {
      return request('POST', '/api/mp/session', { appid: appid(), code: code })
    })
    .then(function (body) {
      var session = { token: body.session_token, expiresAt: Date.now() + body.expires_in * 1000 }
      wx.setStorageSync(STORAGE_KEY, session)
      return session
    })
    .catch(function (err) {
      if (err.error === 'code_used' && !retried) return login(true)
      throw err
    })
}

function session() {
  var current = stored()
  return current ? Promise.resolve(current) : login(false)
}

/** An authenticated call; an expired or forgotten session is renewed once. */
function call(method, path, data) {
  return session().then(function (current) {
    return request(method, path, data, current.token).catch(function (err) {
      if (err.status !== 401 || err.error !== 'invalid_session') throw err
      forget()
      return login(false).then(function (renewed) {
        return request(method, path, data, renewed.token)
      })
    })
  })
}

/** wx.uploadFile as a promise of the parsed JSON answer (errors as in request()). */
function upload(path, filePath, name, token) {
  return new Promise(function (resolve, reject) {
    wx.uploadFile({
      url: config.apiBase.replace(/\/+$/, '') + path,
      filePath: filePath,
      name: name,
      header: { authorization: 'Bearer ' + token },
      timeout: 15000,
      success: function (res) {
        var body = {}
        try {
          body = typeof res.data === 'string' ? JSON.parse(res.data) : res.data || {}
        } catch (e) {
          body = {}
        }
        if (res.statusCode >= 200 && res.statusCode < 300) resolve(body)
        else reject({ status: res.statusCode, error: body.error || 'unknown', description: body.error_description || '' })
      },
      fail: function (err) {
        reject({ status: 0, error: 'network', description: (err && err.errMsg) || '' })
      },
    })
  })
}

/** The avatar chooseAvatar gave (a local file) uploaded; resolves its URL at the portal. */
function uploadAvatar(filePath) {
  return session().then(function (current) {
    return upload('/api/mp/avatar', filePath, 'avatar', current.token).catch(function (err) {
      if (err.status !== 401 || err.error !== 'invalid_session') throw err
      forget()
      return login(false).then(function (renewed) {
        return upload('/api/mp/avatar', filePath, 'avatar', renewed.token)
      })
    })
  }).then(function (body) {
    return body.avatar_url
  })
}

function ticketPath(ticket, action) {
  return '/api/mp/tickets/' + encodeURIComponent(ticket) + '/' + action
}

module.exports = {
  STORAGE_KEY: STORAGE_KEY,
  session: session,
  forget: forget,
  /** `scene`: WeChat's launch scene (how the QR code reached the phone), if known. */
  scan: function (ticket, scene) {
    return call('POST', ticketPath(ticket, 'scan'), scene ? { scene: scene } : {})
  },
  confirm: function (ticket, body) {
    return call('POST', ticketPath(ticket, 'confirm'), body)
  },
  /** `reason` 'not_me': "this wasn't me", the attempt is flagged for the site. */
  cancel: function (ticket, reason) {
    return call('POST', ticketPath(ticket, 'cancel'), reason ? { reason: reason } : {})
  },
  uploadAvatar: uploadAvatar,
}
