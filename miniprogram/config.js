/**
 * The one place to configure the login mini program.
 *
 * apiBase: where the mini program calls the portal's mini-program API (/api/mp/...).
 *   The platform's apex host (https://login.example.com), or a tenant's own domain.
 *   It must be an https "request domain" of the mini program (see README: "Mini program").
 * appid: the AppID this build is published under; sent to /api/mp/session so the portal
 *   knows which mini program (and so which AppSecret) the wx.login code belongs to.
 *   Empty: the running mini program's own AppID (wx.getAccountInfoSync()).
 * domains: the QR codes this mini program accepts: {pool}.{domain}/q/{ticket} or
 *   {domain}/q/{ticket} for each domain here. Anything else is refused.
 * allowHttp: accept http:// QR contents (local development only).
 */
module.exports = {
  apiBase: 'https://login.example.com',
  appid: '',
  domains: ['login.example.com'],
  allowHttp: false,
}
