// response_mode=web_message: give the authorization response to the window that
// opened this popup, and only if that window is at the client's registered origin
// (targetOrigin makes the browser drop the message otherwise), then close.
(function () {
  var box = document.getElementById("web-message");
  var origin = box.dataset.targetOrigin;
  var response = JSON.parse(box.dataset.response);
  // Only a popup's opener: the page is never framed (frame-ancestors 'none').
  var target = window.opener;
  if (target) {
    target.postMessage({ type: "authorization_response", response: response }, origin);
    window.close();
  }
})();
