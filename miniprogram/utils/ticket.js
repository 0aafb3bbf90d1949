/**
 * Which login ticket the page was opened for.
 *
 * - A link QR code ({pool url}/q/{ticket}) opens the page through the "scan a normal
 *   link QR code to open the mini program" rule with options.q = the URL-encoded content.
 * - A mini-program code (wxacode.getUnlimited) opens it with options.scene = the ticket.
 *
 * Only a QR content of the form {prefix}{ticket}, for a prefix of config.qrPrefixes (the
 * link rules this mini program has published), is accepted: a QR code of any other site,
 * or of another mini program's rule, must never lead to a login confirmation.
 */
var TICKET = /^[A-Za-z0-9_-]{16,64}$/

function safeDecode(value) {
  try {
    return decodeURIComponent(value)
  } catch (e) {
    return null
  }
}

/** The ticket of a QR content URL, or null if it is not under one of our link rules. */
function fromUrl(url, config) {
  url = String(url || '').trim()
  var prefixes = config.qrPrefixes || []
  for (var i = 0; i < prefixes.length; i++) {
    var prefix = String(prefixes[i])
    if (!prefix || url.slice(0, prefix.length) !== prefix) continue
    var ticket = url.slice(prefix.length)
    if (TICKET.test(ticket)) return ticket
  }
  return null
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

module.exports = { fromOptions: fromOptions, fromUrl: fromUrl, pageQuery: pageQuery }
