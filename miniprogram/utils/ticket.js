/**
 * Which login ticket the page was opened for.
 *
 * - A link QR code ({pool url}/q/{ticket}) opens the page through the "scan a normal
 *   link QR code to open the mini program" rule with options.q = the URL-encoded content.
 * - A mini-program code (wxacode.getUnlimited) opens it with options.scene = the ticket.
 *
 * Only URLs under the configured portal domains are accepted: a QR code of any other
 * site must never lead to a login confirmation.
 */
var TICKET = /^[A-Za-z0-9_-]{16,64}$/
var URL_RE = /^(https?):\/\/([A-Za-z0-9.-]+)(?::(\d{1,5}))?\/q\/([A-Za-z0-9_-]{16,64})\/?(?:[?#].*)?$/

function safeDecode(value) {
  try {
    return decodeURIComponent(value)
  } catch (e) {
    return null
  }
}

function hostAllowed(host, domains) {
  host = host.toLowerCase()
  for (var i = 0; i < domains.length; i++) {
    var domain = String(domains[i]).toLowerCase().split(':')[0]
    if (!domain) continue
    if (host === domain) return true
    var suffix = '.' + domain
    var label = host.slice(0, host.length - suffix.length)
    // exactly one label before the domain: {pool}.{domain}
    if (host.length > suffix.length && host.slice(-suffix.length) === suffix && label.indexOf('.') < 0) return true
  }
  return false
}

/** The ticket of a QR content URL, or null if it is not one of ours. */
function fromUrl(url, config) {
  var m = URL_RE.exec(String(url || '').trim())
  if (!m) return null
  if (m[1] === 'http' && !config.allowHttp) return null
  if (!hostAllowed(m[2], config.domains || [])) return null
  return m[4]
}

/** {ticket} or {error: 'invalid_qr'} for the page's onLoad options. */
function fromOptions(options, config) {
  options = options || {}
  if (options.scene) {
    var scene = safeDecode(options.scene)
    if (scene && TICKET.test(scene)) return { ticket: scene }
    return { error: 'invalid_qr' }
  }
  if (options.q) {
    var ticket = fromUrl(safeDecode(options.q), config)
    if (ticket) return { ticket: ticket }
    return { error: 'invalid_qr' }
  }
  if (options.ticket && TICKET.test(options.ticket)) return { ticket: options.ticket }
  return { error: 'invalid_qr' }
}

/** The login page's query for a wx.scanCode result (a link QR or a mini-program code). */
function pageQuery(scanResult) {
  var path = scanResult.path || ''
  var m = /[?&]scene=([^&]*)/.exec(path)
  if (m) return 'scene=' + m[1]
  return 'q=' + encodeURIComponent(scanResult.result || '')
}

module.exports = { fromOptions: fromOptions, fromUrl: fromUrl, hostAllowed: hostAllowed, pageQuery: pageQuery }
