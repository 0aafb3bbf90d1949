/**
 * The one place to configure the login mini program.
 *
 * apiBase: where the mini program calls the portal's mini-program API (/api/mp/...).
 *   The platform's apex host (https://login.example.com), or a tenant's own domain.
 *   It must be an https "request domain" of the mini program (see README: "Mini program").
 * appid: the AppID this build is published under; sent to /api/mp/session so the portal
 *   knows which mini program (and so which AppSecret) the wx.login code belongs to.
 *   Empty: the running mini program's own AppID (wx.getAccountInfoSync()).
 * qrPrefixes: the link rules this mini program has published ("扫普通链接二维码打开小程序"):
 *   it accepts exactly {prefix}{ticket} for these prefixes, nothing else. The platform's
 *   default mini program: ['https://login.example.com/q/'] (PORTAL_QR_BASE + '/q/', one rule
 *   for every pool it serves); a private one: its pool's prefix, e.g.
 *   ['https://acme.login.example.com/q/'] (`portal mp check --pool acme` prints it).
 */
module.exports = {
  apiBase: 'https://login.example.com',
  appid: '',
  qrPrefixes: ['https://login.example.com/q/'],
}
