// response_mode=web_message: give the authorization response to the window that
// opened this popup, or to the page that framed it (silent authentication in a
// hidden iframe), and only if that window is at the client's registered origin
// (targetOrigin makes the browser drop the message otherwise; the page's
// frame-ancestors lets only that origin frame it).
(function () {
  var box = document.getElementById("web-message");
  var origin = box.dataset.targetOrigin;
  var response = JSON.parse(box.dataset.response);
  var message = { type: "authorization_response", response: response };
  if (window.opener) {
    window.opener.postMessage(message, origin);
    window.close();
  } else if (window.parent !== window) {
    window.parent.postMessage(message, origin);
  }
})();
