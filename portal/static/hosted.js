// The hosted login page: follow the QR ticket's status, pushed by Server-Sent
// Events (long polling if the stream keeps failing), and finish the login by
// posting the confirmed ticket to /oidc/auth/complete.
(function () {
  "use strict";
  var box = document.getElementById("login");
  if (!box) return;
  var d = box.dataset;
  var statusText = document.getElementById("status-text");
  var scanned = document.getElementById("scanned");
  var overlay = document.getElementById("overlay");
  var finished = false;
  var source = null;
  var failures = 0;

  function show(data) {
    if (finished) return;
    switch (data.status) {
      case "scanned":
        scanned.hidden = false;
        var by = data.scanned_by || {};
        var avatar = document.getElementById("avatar");
        if (by.avatar_url) { avatar.src = by.avatar_url; avatar.hidden = false; }
        document.getElementById("who").textContent = by.nickname || "";
        // Number matching (issue 20): the person picks this number on the phone.
        var match = document.getElementById("match");
        if (match && data.number) {
          document.getElementById("match-number").textContent = String(data.number);
          match.hidden = false;
          document.getElementById("scanned-hint").hidden = true;
        }
        statusText.textContent = d.msgScanned;
        break;
      case "confirmed":
        finished = true;
        stop();
        statusText.textContent = d.msgConfirmed;
        document.getElementById("complete").submit();
        break;
      case "expired":
      case "cancelled":
        finished = true;
        stop();
        scanned.hidden = true;
        overlay.hidden = false;
        var dev = document.getElementById("dev-phone"); // dev only: its code is dead now
        if (dev) dev.hidden = true;
        document.getElementById("overlay-text").textContent =
          data.status === "expired" ? d.msgExpired : d.msgCancelled;
        statusText.textContent = "";
        document.getElementById("refresh").focus();
        break;
    }
  }

  function stop() {
    if (source) { source.close(); source = null; }
  }

  function listen() {
    if (!window.EventSource) return poll("pending");
    source = new EventSource(d.events);
    source.addEventListener("status", function (e) {
      failures = 0;
      show(JSON.parse(e.data));
    });
    source.onerror = function () {
      // EventSource reconnects by itself; after repeated failures fall back to polling.
      if (finished) return;
      failures += 1;
      if (failures >= 3) { stop(); poll("pending"); }
    };
  }

  function poll(known) {
    if (finished) return;
    var url = d.status + "?wait=25&known=" + encodeURIComponent(known);
    fetch(url, { headers: { "X-Ticket-Secret": d.secret }, cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) { show(data); if (!finished) poll(data.status); })
      .catch(function () {
        statusText.textContent = d.msgOffline;
        setTimeout(function () { poll(known); }, 2000);
      });
  }

  // The phone itself (issue 20): a link that opens the mini program's confirm page
  // for this ticket. The page keeps following the ticket, and re-checks it at once
  // when the person comes back from WeChat. Without a link, the text stays.
  var open = document.getElementById("open-wechat");
  if (open) {
    fetch(open.dataset.applink, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ secret: d.secret, kind: "scheme" }),
      cache: "no-store",
    })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        if (finished) return;
        open.href = data.url;
        document.getElementById("open-wechat-wrap").hidden = false;
        statusText.textContent = d.msgOpenWechat;
      })
      .catch(function () {}); // no link (a personal account's mini program, quota): scan
  }

  function recheck() {
    if (finished || document.visibilityState !== "visible") return;
    fetch(d.status, { headers: { "X-Ticket-Secret": d.secret }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) show(data); })
      .catch(function () {});
  }
  document.addEventListener("visibilitychange", recheck);
  window.addEventListener("pageshow", recheck);

  listen();
})();
