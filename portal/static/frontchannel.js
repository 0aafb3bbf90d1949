// Front-channel logout: the page frames each client's logout URI; once they have
// loaded (or after 5 seconds at most), go on to the post-logout redirect URI.
(function () {
  var box = document.getElementById("logged-out");
  var next = box.dataset.next;
  if (!next) return;
  var frames = box.querySelectorAll("iframe.frontchannel");
  var left = frames.length;
  var gone = false;
  var go = function () {
    if (!gone) { gone = true; window.location.replace(next); }
  };
  frames.forEach(function (frame) {
    frame.addEventListener("load", function () { left -= 1; if (left <= 0) go(); });
  });
  if (left === 0) go();
  setTimeout(go, 5000);
})();
