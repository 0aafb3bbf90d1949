// The example shop's pages: log in one of four ways, then let the backend decide.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("config").textContent);
  var result = document.getElementById("result");
  window.events = []; // what the SDK reported, in order (the browser tests read it)

  function log(name, detail) {
    window.events.push({ name: name, detail: detail === undefined ? null : detail });
  }

  function errorInfo(err) {
    return { error: (err && err.error) || String(err), retrying: !!(err && err.retrying) };
  }

  // Never trust the browser: the backend verifies the ID token and says who this is.
  function verify(flow, tokens) {
    window.tokens = tokens;
    result.textContent = "Checking the ID token with the shop's backend…";
    return fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ flow: flow, id_token: tokens.id_token }),
    })
      .then(function (r) {
        return r.json().then(function (data) {
          return { ok: r.ok, data: data };
        });
      })
      .then(function (answer) {
        var d = answer.data;
        window.verified = answer.ok ? d : null;
        result.dataset.state = answer.ok ? "verified" : "refused";
        result.textContent = answer.ok
          ? "Logged in as " + (d.nickname || "(no nickname)") + " (sub " + d.sub + "), verified by the shop's backend"
          : "Refused by the shop's backend: " + d.error;
      });
  }

  function failed(err) {
    log("error", errorInfo(err));
    result.dataset.state = "failed";
    result.textContent = "Login failed: " + ((err && err.error) || err);
  }

  var pages = {
    sdk: function () {
      window.widget = Portal.qrLogin("#login", {
        clientId: cfg.clientId,
        lang: cfg.lang,
        autoRefresh: cfg.autoRefresh,
        onScanned: function (who) { log("scanned", who); },
        onSuccess: function (r) { log("success", { user: r.user }); verify("sdk", r); },
        onExpired: function () { log("expired"); },
        onCancel: function () { log("cancelled"); },
        onError: function (err) { log("error", errorInfo(err)); },
      });
    },
    component: function () {
      var el = document.querySelector("portal-login");
      el.addEventListener("portal-login", function (e) {
        log("portal-login", { user: e.detail.user });
        verify("component", e.detail);
      });
      el.addEventListener("portal-scanned", function (e) { log("portal-scanned", e.detail); });
      el.addEventListener("portal-expired", function () { log("portal-expired"); });
      el.addEventListener("portal-error", function (e) { log("portal-error", errorInfo(e.detail)); });
    },
    popup: function () {
      document.getElementById("login").addEventListener("click", function () {
        Portal.loginWithPopup({
          clientId: cfg.clientId,
          redirectUri: cfg.redirectUri,
          scope: "openid profile",
          nonce: cfg.nonce,
        }).then(function (tokens) {
          log("popup", { scope: tokens.scope });
          return verify("popup", tokens);
        }, failed);
      });
    },
    redirect: function () {
      document.getElementById("login").addEventListener("click", function () {
        Portal.loginWithRedirect({
          clientId: cfg.clientId,
          redirectUri: cfg.redirectUri,
          scope: "openid profile",
          nonce: cfg.nonce,
          appState: { from: "/redirect" },
        }).catch(failed);
      });
    },
    callback: function () {
      Portal.handleRedirectCallback().then(function (tokens) {
        log("redirect", { appState: tokens.appState });
        return verify("redirect", tokens);
      }, failed);
    },
  };

  var run = pages[document.body.dataset.page];
  if (run) run();
})();
