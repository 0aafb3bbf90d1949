/**
 * The home page, for when the mini program is opened by itself: scan the login QR
 * code shown on the computer, then go to the confirm page.
 */
var i18n = require('../../utils/i18n')
var tickets = require('../../utils/ticket')

Component({
  data: {
    t: i18n.texts('zh'),
  },

  methods: {
    onLoad: function () {
      var t = i18n.texts(i18n.language())
      this.setData({ t: t })
      if (wx.setNavigationBarTitle) wx.setNavigationBarTitle({ title: t.title })
    },

    onScan: function () {
      wx.scanCode({
        onlyFromCamera: false,
        success: function (res) {
          wx.navigateTo({ url: '/pages/login/index?' + tickets.pageQuery(res) })
        },
      })
    },
  },
})
