/**
 * The confirm page: opened by a scanned login QR code, it shows which site asks to
 * log in, and confirms or cancels the login.
 *
 * Written with the Component constructor (a page's lifecycle in `methods`), which
 * WeChat supports for pages and which lets miniprogram-simulate test the page.
 */
var config = require('../../config')
var api = require('../../utils/api')
var i18n = require('../../utils/i18n')
var tickets = require('../../utils/ticket')

var DEFAULT_AVATAR = '/images/avatar.png'
// Opened from a URL Scheme, a URL Link or a web page's open tag (the phone itself).
var LINK_SCENES = [1065, 1194, 1286, 1167]

/** WeChat's scene for this opening of the mini program (0 when it cannot say). */
function launchScene() {
  try {
    var options = wx.getEnterOptionsSync ? wx.getEnterOptionsSync() : wx.getLaunchOptionsSync()
    return Number(options && options.scene) || 0
  } catch (e) {
    return 0
  }
}

function isLinkScene(scene) {
  return LINK_SCENES.indexOf(scene) >= 0
}

Component({
  data: {
    state: 'loading', // loading | confirm | working | success | cancelled | error
    t: i18n.texts('zh'),
    lang: 'zh',
    ticket: '',
    pool: null,
    client: null,
    phoneRequired: false,
    phoneAsked: false,
    notice: '',
    nickname: '',
    avatarUrl: '',
    defaultAvatar: DEFAULT_AVATAR,
    error: null,
    scene: 0, // WeChat's launch scene: how the QR code reached this phone
    startedFrom: '', // where the login was started, one line (issue 20)
    warning: '', // the QR code came from an image or a link: confirm only if it was you
    numbers: [], // number matching: the three numbers offered
    picked: null, // the number tapped
    privacy: false, // WeChat asks for consent to the privacy guide (the popup is shown)
  },

  methods: {
    onLoad: function (options) {
      var lang = i18n.language()
      var t = i18n.texts(lang)
      this.setData({ lang: lang, t: t })
      if (wx.setNavigationBarTitle) wx.setNavigationBarTitle({ title: t.title })
      // The privacy guide (用户隐私保护指引): before the phone button or chooseAvatar may
      // run, WeChat asks this page to get the person's consent (its own popup).
      if (wx.onNeedPrivacyAuthorization) wx.onNeedPrivacyAuthorization(this.onNeedPrivacy.bind(this))
      var found = tickets.fromOptions(options, config)
      if (found.error) return this.fail({ error: found.error })
      this.setData({ ticket: found.ticket, scene: launchScene() })
      return this.scan()
    },

    scan: function () {
      var self = this
      self.setData({ state: 'loading', error: null, notice: '' })
      return api.scan(self.data.ticket, self.data.scene).then(
        function (body) {
          var t = self.data.t
          var warning = ''
          if (body.scan_source === 'warned') warning = isLinkScene(self.data.scene) ? t.linkWarning : t.sourceWarning
          self.setData({
            state: 'confirm',
            pool: { name: body.pool.name, logoUrl: body.pool.logo_url },
            client: body.client || null,
            phoneRequired: !!body.phone_required,
            phoneAsked: !!body.phone_requested,
            notice: body.phone_required ? t.phoneNeeded : '',
            startedFrom: body.context ? i18n.startedFrom(body.context, self.data.lang) : '',
            warning: warning,
            numbers: body.number_choices || [],
            picked: null,
          })
        },
        function (err) {
          self.fail(err)
        }
      )
    },

    confirm: function (extra) {
      var self = this
      if (self.data.state !== 'confirm') return Promise.resolve()
      var body = {}
      if (self.data.nickname.trim()) body.nickname = self.data.nickname.trim()
      if (extra && extra.phone_code) body.phone_code = extra.phone_code
      if (extra && extra.phone_errno) body.phone_errno = extra.phone_errno
      if (self.data.numbers.length) {
        if (self.data.picked === null) {
          self.setData({ notice: self.data.t.pickNumber })
          return Promise.resolve()
        }
        body.number = self.data.picked
      }
      self.setData({ state: 'working', notice: '' })
      // The avatar chosen (a local file) is uploaded first; without it the login goes on.
      var avatar = self._avatarUpload || Promise.resolve('')
      return avatar
        .then(function (url) {
          if (url) body.avatar_url = url
          return api.confirm(self.data.ticket, body)
        })
        .then(
          function () {
            self.setData({ state: 'success' })
          },
          function (err) {
            if (err.error === 'phone_required') {
              self.setData({ state: 'confirm', phoneRequired: true, notice: self.data.t.phoneNeeded })
            } else if (err.error === 'nickname_refused') {
              // WeChat's content security refused it: pick another, or none.
              self.setData({ state: 'confirm', nickname: '', notice: i18n.error(err.error, self.data.lang).message })
            } else if (err.error === 'invalid_phone_code') {
              self.setData({ state: 'confirm', notice: i18n.error(err.error, self.data.lang).message })
            } else {
              self.fail(err)
            }
          }
        )
    },

    // The confirm and phone buttons submit the form: its value is the nickname as
    // WeChat left it after its check (cleared if it failed), not what was typed.
    // The confirm button's submit logs in; a phone button's only takes the nickname,
    // and its login goes on in onPhone once WeChat answers.
    onSubmit: function (e) {
      var detail = (e && e.detail) || {}
      var nickname = (detail.value && detail.value.nickname) || ''
      this.setData({ nickname: String(nickname).slice(0, 32) })
      var target = detail.target || {}
      var action = target.dataset && target.dataset.action
      if (action === 'phone') return Promise.resolve()
      return this.confirm({})
    },

    // WeChat needs consent to the privacy guide first: show the popup, answer later.
    onNeedPrivacy: function (resolve) {
      this._privacyResolve = resolve
      this.setData({ privacy: true })
    },

    onPrivacyOpen: function () {
      if (wx.openPrivacyContract) wx.openPrivacyContract({})
    },

    // The popup's agree button is open-type="agreePrivacyAuthorization".
    onPrivacyAgree: function () {
      var resolve = this._privacyResolve
      this._privacyResolve = null
      this.setData({ privacy: false, notice: '' })
      if (resolve) resolve({ buttonId: 'privacy-agree', event: 'agree' })
    },

    onPrivacyDisagree: function () {
      var resolve = this._privacyResolve
      this._privacyResolve = null
      this.setData({ privacy: false, notice: this.data.t.privacyDenied })
      if (resolve) resolve({ event: 'disagree' })
    },

    // The getPhoneNumber button: detail.code is exchanged by the portal for the number.
    onPhone: function (e) {
      var detail = (e && e.detail) || {}
      if (detail.code) return this.confirm({ phone_code: detail.code })
      // 104: the privacy guide was not agreed to (not a refusal of the phone number).
      if (detail.errno === 104) {
        this.setData({ notice: this.data.t.privacyDenied })
        return Promise.resolve()
      }
      // 1400001: the mini program's phone-number quota is spent (not the person's refusal).
      // The portal counts it; without a number the login goes on where the site allows.
      if (detail.errno === 1400001) return this.confirm({ phone_errno: 1400001 })
      if (this.data.phoneRequired) this.setData({ notice: this.data.t.phoneDenied })
      return Promise.resolve()
    },

    // Number matching: the number the person sees on the computer.
    onPickNumber: function (e) {
      var value = Number(e && e.currentTarget && e.currentTarget.dataset && e.currentTarget.dataset.number)
      if (this.data.numbers.indexOf(value) < 0) return
      this.setData({ picked: value, notice: '' })
    },

    // "This wasn't me": cancels the login and flags it for the site.
    onNotMe: function () {
      return this.onCancel('not_me')
    },

    onCancel: function (reason) {
      var self = this
      if (self.data.state !== 'confirm') return Promise.resolve()
      reason = reason === 'not_me' ? 'not_me' : ''
      self.setData({ state: 'working' })
      return api.cancel(self.data.ticket, reason).then(
        function () {
          self.setData({ state: reason ? 'reported' : 'cancelled' })
        },
        function (err) {
          self.fail(err)
        }
      )
    },

    // chooseAvatar gives a temporary file on the phone: show it, and upload it to the
    // portal at once, whose URL the confirmation then carries.
    onChooseAvatar: function (e) {
      var file = e && e.detail && e.detail.avatarUrl
      if (!file) return Promise.resolve()
      this.setData({ avatarUrl: file })
      this._avatarUpload = api.uploadAvatar(file).catch(function () {
        return '' // an avatar that could not be uploaded is left out, not an error
      })
      return this._avatarUpload
    },

    onRetry: function () {
      if (this.data.ticket) return this.scan()
      return Promise.resolve()
    },

    onScanAgain: function () {
      wx.scanCode({
        onlyFromCamera: false,
        success: function (res) {
          wx.redirectTo({ url: '/pages/login/index?' + tickets.pageQuery(res) })
        },
      })
    },

    onClose: function () {
      if (wx.exitMiniProgram) wx.exitMiniProgram({})
    },

    fail: function (err) {
      var code = (err && err.error) || 'unknown'
      this.setData({ state: 'error', error: i18n.error(code, this.data.lang) })
    },
  },
})
