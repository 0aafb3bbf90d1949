/*! Portal SDK v1: log in with WeChat by scanning a QR code. Docs: docs/sdk.md */
// Plain modern JavaScript, no build step. Loaded from a pool host
// (<script src="https://acme.login.example.com/sdk/v1/portal.js">), it talks to
// that pool: the pool's address is the origin of this script's own src.
(function (window, document) {
  "use strict";
  if (window.Portal && window.Portal.version) return; // included twice: keep the first

  var script = document.currentScript;
  var FINAL = { confirmed: 1, cancelled: 1, expired: 1 };
  var MAX_AUTO_REFRESH = 20; // unattended page: stop making codes after this many in a row
  var SSE_FAILURES = 3; // failed stream connections in a row before falling back to long poll
  var POLL_WAIT = 25;
  var STORE = "portal.sdk.auth.";

  var TEXTS = {
    zh: {
      title: "微信扫码登录",
      loading: "正在加载二维码…",
      scan: "请使用微信扫一扫登录",
      scanned: "扫码成功，请在手机上确认登录",
      confirmHint: "请在手机上点击“确认登录”",
      matchNumber: "请在手机上选择这个数字",
      openWeChat: "打开微信登录",
      confirmed: "已确认，正在登录…",
      success: "登录成功",
      expired: "二维码已过期",
      cancelled: "你已取消登录",
      error: "登录出错了",
      offline: "网络连接中断，正在重试…",
      refresh: "刷新二维码",
      qrAlt: "用微信扫码登录的二维码",
      devPhone: "在手机模拟器中打开",
    },
    en: {
      title: "Log in with WeChat",
      loading: "Loading the QR code…",
      scan: "Scan the QR code with WeChat to log in",
      scanned: "Scanned: confirm the login on your phone",
      confirmHint: "Tap “Confirm login” on your phone",
      matchNumber: "Pick this number on your phone",
      openWeChat: "Open WeChat to log in",
      confirmed: "Confirmed, logging you in…",
      success: "You are logged in",
      expired: "The QR code has expired",
      cancelled: "You cancelled the login",
      error: "Something went wrong",
      offline: "Connection lost, retrying…",
      refresh: "Refresh the QR code",
      qrAlt: "QR code to scan with WeChat",
      devPhone: "open in the phone simulator",
    },
  };

  var CSS =
    ".portal-qr{display:inline-block;text-align:center;color:#1f2329;" +
    'font:14px/1.5 system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif}' +
    ".portal-qr-code{position:relative;margin:0 auto}" +
    ".portal-qr-img{display:block;width:100%;height:100%}" +
    ".portal-qr-layer{position:absolute;inset:0;display:flex;flex-direction:column;gap:8px;" +
    "align-items:center;justify-content:center;padding:12px;box-sizing:border-box;" +
    "background:rgba(255,255,255,.95)}" +
    ".portal-qr [hidden]{display:none!important}" +
    ".portal-qr-avatar{width:64px;height:64px;border-radius:50%;object-fit:cover}" +
    ".portal-qr-layer p{margin:0}" +
    ".portal-qr-number{font-size:48px;font-weight:700;line-height:1.1;letter-spacing:2px}" +
    ".portal-qr button{font:inherit;padding:6px 16px;border:0;border-radius:6px;" +
    "background:#07c160;color:#fff;cursor:pointer}" +
    ".portal-qr-status{margin:8px 0 0;min-height:1.5em}" +
    ".portal-qr-dev{font-size:13px;color:#576b95}" +
    ".portal-qr-open{display:inline-block;margin:8px 0 0;padding:8px 16px;border-radius:6px;" +
    "background:#07c160;color:#fff;text-decoration:none}";

  // --- small helpers ----------------------------------------------------------

  function base() {
    return Portal.baseUrl.replace(/\/+$/, "");
  }

  function PortalError(code, description, status) {
    var err = new Error(description || code);
    err.name = "PortalError";
    err.error = code;
    err.error_description = description || "";
    err.status = status || 0;
    return err;
  }

  function networkError() {
    return PortalError(
      "network_error",
      "Could not reach the login service: the network is down, or this website's " +
        "origin is not registered for the client."
    );
  }

  // One JSON request; errors become PortalError with the API's own code.
  function request(method, url, body, signal) {
    var init = { method: method, signal: signal, cache: "no-store", credentials: "omit" };
    if (body) {
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(answer, function (err) {
      throw err && err.name === "AbortError" ? err : networkError();
    });
  }

  function answer(r) {
    return r.json().then(
      function (data) {
        if (r.ok) return data;
        throw PortalError(data.error || "http_" + r.status, data.error_description, r.status);
      },
      function () {
        throw PortalError("http_" + r.status, "Unexpected answer from the login service.", r.status);
      }
    );
  }

  function assign(target) {
    for (var i = 1; i < arguments.length; i++) {
      var src = arguments[i] || {};
      for (var k in src) if (Object.prototype.hasOwnProperty.call(src, k)) target[k] = src[k];
    }
    return target;
  }

  function texts(lang, el, overrides) {
    var holder = el && el.closest && el.closest("[lang]");
    lang = lang || (holder && holder.lang) || navigator.language || "zh";
    return assign({}, TEXTS[/^zh/i.test(lang) ? "zh" : "en"], overrides);
  }

  function make(tag, cls, parent) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (parent) parent.appendChild(node);
    return node;
  }

  function addStyle(el, css) {
    var root = el.getRootNode ? el.getRootNode() : document;
    var parent = root === document ? document.head : root.host ? root : document.head;
    if (parent.querySelector("style[data-portal-sdk]")) return;
    var style = make("style");
    style.setAttribute("data-portal-sdk", "");
    style.textContent = css;
    parent.appendChild(style);
  }

  function later(fn) {
    // A site's callback that throws must not break the widget; the error still shows.
    return function (arg) {
      try {
        if (typeof fn === "function") fn(arg);
      } catch (e) {
        setTimeout(function () {
          throw e;
        });
      }
    };
  }

  // --- Portal.qrLogin ----------------------------------------------------------

  function qrLogin(target, options) {
    var el = typeof target === "string" ? document.querySelector(target) : target;
    if (!el || !el.appendChild) throw new TypeError("Portal.qrLogin: no element " + target);
    var running = el.__portalQrLogin;
    if (running) {
      // The same element again: one widget, with the new options; nothing doubles.
      running.configure(options);
      if (running.stopped()) running.handle.refresh();
      return running.handle;
    }

    var o, t;
    var gen = 0; // every new ticket (or stop) starts a generation; late answers of old ones are dropped
    var tk = null; // the ticket: {ticket, secret, expires_in, qrcode}
    var status = null;
    var creating = false;
    var stopped = false;
    var exchanging = false;
    var source = null; // the one EventSource
    var ctrl = null; // the one fetch in flight
    var timer = null; // the one retry timer
    var deadline = null; // the one local expiry timer
    var failures = 0;
    var longPoll = !window.EventSource;
    var offline = false;
    var autoRefreshes = 0;
    var scannedKey = null;

    addStyle(el, CSS);
    var root = make("div", "portal-qr");
    var code = make("div", "portal-qr-code", root);
    var img = make("img", "portal-qr-img", code);
    var scanned = make("div", "portal-qr-layer portal-qr-scanned", code);
    var avatar = make("img", "portal-qr-avatar", scanned);
    var who = make("strong", "portal-qr-who", scanned);
    var number = make("strong", "portal-qr-number", scanned); // number matching (issue 20)
    var hint = make("p", "portal-qr-hint", scanned);
    var retry = make("div", "portal-qr-layer portal-qr-retry", code);
    var why = make("p", "portal-qr-why", retry);
    var button = make("button", "portal-qr-refresh", retry);
    var line = make("p", "portal-qr-status", root);
    var dev = make("a", "portal-qr-dev", root); // a dev portal only: its phone simulator
    var open = null; // openWeChat: a link to the mini program, made only when offered (issue 20)
    dev.target = "_blank";
    dev.rel = "noopener";
    avatar.alt = "";
    button.type = "button";
    line.setAttribute("role", "status");
    line.setAttribute("aria-live", "polite");
    scanned.hidden = retry.hidden = avatar.hidden = dev.hidden = number.hidden = true;
    img.style.visibility = "hidden";
    button.addEventListener("click", function () {
      autoRefreshes = 0;
      refresh();
    });
    el.appendChild(root);

    function configure(options) {
      o = assign({ autoRefresh: false, size: 200 }, o, options); // again: only what changes
      t = texts(o.lang, el, o.texts);
      code.style.width = code.style.height = o.size + "px";
      img.width = img.height = o.size;
      img.alt = t.qrAlt;
      button.textContent = t.refresh;
      hint.textContent = t.confirmHint;
      dev.textContent = t.devPhone;
      if (open) open.textContent = t.openWeChat;
      if (status) show(status);
      if (tk && !(open && open.getAttribute("href"))) offerLink(gen);
    }

    // openWeChat (issue 20): on a phone's browser outside WeChat, a link that opens the
    // mini program's confirm page for this ticket; the widget keeps following it and
    // checks it again when the page comes back into view. Without one: the QR code.
    function onPhoneOutsideWeChat() {
      var ua = navigator.userAgent || "";
      return /Mobile|Android|iPhone/.test(ua) && !/MicroMessenger/.test(ua);
    }

    function offerLink(my) {
      if (!o.openWeChat || !tk || FINAL[status] || !onPhoneOutsideWeChat()) return;
      var body = { secret: tk.secret, kind: "scheme" };
      request("POST", base() + "/api/qrcode/" + tk.ticket + "/applink", body).then(
        function (data) {
          if (my !== gen || FINAL[status]) return;
          if (!open) open = make("a", "portal-qr-open", root);
          open.textContent = t.openWeChat;
          open.href = data.url;
          open.hidden = false;
        },
        function () {} // no link for this site (a personal account's mini program, quota)
      );
    }

    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState !== "visible" || !tk || FINAL[status] || stopped) return;
      var my = gen;
      request("GET", ticketUrl("status")).then(
        function (data) {
          if (my === gen) update(my, data);
        },
        function () {}
      );
    });

    function fire(name, arg) {
      later(o[name])(arg);
    }

    function show(state, message) {
      root.setAttribute("data-portal-status", state);
      line.textContent =
        message ||
        { loading: t.loading, pending: t.scan, scanned: t.scanned, confirmed: t.confirmed,
          success: t.success, expired: "", cancelled: "", error: "" }[state] || ""; // prettier-ignore
    }

    function overlay(message) {
      scanned.hidden = true;
      retry.hidden = false;
      why.textContent = message;
    }

    function quiet() {
      if (source) source.close();
      if (ctrl) ctrl.abort();
      dev.hidden = true;
      if (open) open.hidden = true;
      clearTimeout(timer);
      clearTimeout(deadline);
      source = ctrl = timer = deadline = null;
    }

    function refresh() {
      if (creating) return; // a code is on its way: never two
      quiet();
      var my = ++gen;
      stopped = exchanging = offline = false;
      creating = true;
      tk = scannedKey = null;
      failures = 0;
      status = "loading";
      scanned.hidden = retry.hidden = number.hidden = true;
      if (open) {
        open.hidden = true;
        open.removeAttribute("href");
      }
      hint.textContent = t.confirmHint;
      show("loading");
      ctrl = new AbortController();
      var body = o.clientId ? { client_id: o.clientId } : {};
      request("POST", base() + "/api/qrcode", body, ctrl.signal).then(
        function (ticket) {
          if (my !== gen) return;
          creating = false;
          ctrl = null;
          tk = ticket;
          root.setAttribute("data-portal-ticket", ticket.ticket);
          img.src = ticket.qrcode.png;
          if (ticket.dev_phone_url) dev.href = ticket.dev_phone_url;
          dev.hidden = !ticket.dev_phone_url;
          img.style.visibility = "";
          status = "pending";
          show("pending");
          // If no word comes at all (offline), the code still expires on time here.
          deadline = setTimeout(function () {
            if (my === gen) update(my, { status: "expired" });
          }, (ticket.expires_in + 5) * 1000);
          follow(my);
          offerLink(my);
        },
        function (err) {
          if (my !== gen) return;
          creating = false;
          ctrl = null;
          if (err.name !== "AbortError") fail(err);
        }
      );
    }

    function ticketUrl(what) {
      return (
        base() + "/api/qrcode/" + tk.ticket + "/" + what + "?secret=" + encodeURIComponent(tk.secret)
      );
    }

    // Status pushed by Server-Sent Events; the browser reconnects a dropped stream by
    // itself; after SSE_FAILURES failed connections in a row, long polling instead.
    function follow(my) {
      if (longPoll) return poll(my);
      var es = (source = new EventSource(ticketUrl("events")));
      es.addEventListener("status", function (e) {
        if (my !== gen || source !== es) return;
        failures = 0;
        online();
        update(my, JSON.parse(e.data));
      });
      es.onerror = function () {
        if (my !== gen || source !== es) return;
        failures += 1;
        lost();
        if (failures >= SSE_FAILURES) longPoll = true;
        if (es.readyState === 2 || longPoll) {
          es.close(); // the browser gave up, or we do: try again ourselves
          source = null;
          timer = setTimeout(function () {
            timer = null;
            if (my === gen) follow(my);
          }, longPoll ? 0 : backoff());
        }
      };
    }

    function poll(my) {
      ctrl = new AbortController();
      // After a failure, a quick look first: the page learns at once that it is back.
      var url = ticketUrl("status") + "&wait=" + (offline ? 0 : POLL_WAIT) + "&known=" + status;
      request("GET", url, null, ctrl.signal).then(
        function (data) {
          if (my !== gen) return;
          ctrl = null;
          failures = 0;
          online();
          update(my, data);
          if (my === gen && !FINAL[status]) poll(my);
        },
        function (err) {
          if (my !== gen || err.name === "AbortError") return;
          ctrl = null;
          if (err.status >= 400 && err.status < 500) return fail(err); // the ticket is gone
          failures += 1;
          lost();
          timer = setTimeout(function () {
            timer = null;
            if (my === gen) poll(my);
          }, backoff());
        }
      );
    }

    function backoff() {
      return Math.min(1000 * Math.pow(2, failures - 1), 10000);
    }

    function lost() {
      line.textContent = t.offline;
      if (offline) return;
      offline = true; // once per outage, and the widget keeps trying
      var err = PortalError("connection_lost", "The connection to the login service was lost; retrying.");
      err.retrying = true;
      fire("onError", err);
    }

    function online() {
      if (!offline) return;
      offline = false;
      show(status);
    }

    function update(my, data) {
      var s = data.status;
      if (s === "scanned") {
        var by = data.scanned_by || {};
        var key = (by.nickname || "") + "\n" + (by.avatar_url || "") + "\n" + (data.number || "");
        if (status === "scanned" && key === scannedKey) return;
        status = s;
        scannedKey = key;
        autoRefreshes = 0; // someone is here
        who.textContent = by.nickname || "";
        // Number matching: the person picks this number among three on the phone.
        number.textContent = data.number ? String(data.number) : "";
        number.hidden = !data.number;
        hint.textContent = data.number ? t.matchNumber : t.confirmHint;
        avatar.hidden = !by.avatar_url;
        if (by.avatar_url) avatar.src = by.avatar_url;
        scanned.hidden = false;
        show(s);
        var detail = { nickname: by.nickname || "", avatar_url: by.avatar_url || "" };
        if (data.number) detail.number = data.number; // number matching: shown above too
        fire("onScanned", detail);
      } else if (s === "pending") {
        status = s;
        scanned.hidden = true;
        show(s);
      } else if (FINAL[s] && !FINAL[status]) {
        status = s;
        quiet();
        if (s === "confirmed") {
          show(s);
          hint.textContent = t.confirmed;
          exchange(my);
        } else if (s === "cancelled") {
          show(s);
          overlay(t.cancelled);
          fire("onCancel");
        } else {
          show(s);
          fire("onExpired");
          if (my !== gen) return; // the site refreshed in its callback
          if (o.autoRefresh && autoRefreshes < MAX_AUTO_REFRESH) {
            autoRefreshes += 1;
            refresh();
          } else {
            overlay(t.expired);
          }
        }
      }
    }

    function exchange(my) {
      if (exchanging) return; // only ever once per ticket
      exchanging = true;
      ctrl = new AbortController();
      var url = base() + "/api/qrcode/" + tk.ticket + "/exchange";
      request("POST", url, { secret: tk.secret }, ctrl.signal).then(
        function (result) {
          if (my !== gen) return;
          ctrl = null;
          status = "success";
          show("success");
          hint.textContent = t.success;
          fire("onSuccess", result);
        },
        function (err) {
          if (my === gen && err.name !== "AbortError") fail(err);
        }
      );
    }

    function fail(err) {
      quiet();
      status = "error";
      show("error");
      overlay(t.error + (err.error ? " (" + err.error + ")" : ""));
      err.retrying = false;
      fire("onError", err);
    }

    var handle = {
      stop: function () {
        quiet();
        gen += 1;
        creating = false;
        stopped = true;
        root.setAttribute("data-portal-status", "stopped");
      },
      refresh: function () {
        autoRefreshes = 0;
        refresh();
      },
    };
    el.__portalQrLogin = {
      handle: handle,
      configure: configure,
      stopped: function () {
        return stopped;
      },
    };
    configure(options);
    refresh();
    return handle;
  }

  // --- OpenID Connect in the browser: popup and redirect (PKCE, public clients) ----

  function random(bytes) {
    var a = crypto.getRandomValues(new Uint8Array(bytes));
    return b64url(a);
  }

  function b64url(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function authRequest(o, mode) {
    if (!window.crypto || !crypto.subtle) {
      return Promise.reject(PortalError("insecure_context", "PKCE needs a secure (https) page."));
    }
    if (!o.clientId || !o.redirectUri) {
      return Promise.reject(PortalError("invalid_request", "clientId and redirectUri are required."));
    }
    var req = {
      clientId: o.clientId,
      redirectUri: o.redirectUri,
      state: o.state || random(16),
      nonce: o.nonce || random(16),
      verifier: random(32),
    };
    var digest = crypto.subtle.digest("SHA-256", new TextEncoder().encode(req.verifier));
    return digest.then(function (hash) {
      var q = {
        client_id: req.clientId,
        redirect_uri: req.redirectUri,
        response_type: "code",
        scope: o.scope || "openid profile",
        state: req.state,
        nonce: req.nonce,
        code_challenge: b64url(new Uint8Array(hash)),
        code_challenge_method: "S256",
      };
      if (mode) q.response_mode = mode;
      if (o.prompt) q.prompt = o.prompt;
      if (o.lang) q.lang = o.lang;
      req.url = base() + "/oidc/auth?" + new URLSearchParams(q);
      return req;
    });
  }

  function claimsOf(idToken) {
    try {
      var part = idToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var bin = atob(part);
      var bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      return null;
    }
  }

  // The code for tokens at /oidc/token (a form POST: no CORS preflight).
  function redeem(req, code) {
    var body = new URLSearchParams({
      grant_type: "authorization_code",
      code: code || "",
      redirect_uri: req.redirectUri,
      client_id: req.clientId,
      code_verifier: req.verifier,
    });
    var init = { method: "POST", body: body, cache: "no-store", credentials: "omit" };
    return fetch(base() + "/oidc/token", init)
      .then(answer, function () {
        throw networkError();
      })
      .then(function (tokens) {
        // A sanity check only (no signature here): the site's backend must verify the token.
        var claims = claimsOf(tokens.id_token);
        if (!claims || claims.nonce !== req.nonce || claims.iss !== base()) {
          throw PortalError("invalid_id_token", "The ID token is not the answer to this login.");
        }
        tokens.claims = claims;
        tokens.nonce = req.nonce;
        return tokens;
      });
  }

  function authError(r) {
    if (r.error) return PortalError(r.error, r.error_description);
    if (r.iss && r.iss !== base()) return PortalError("invalid_issuer", "Answer from another issuer.");
    return null;
  }

  var popup = null; // the one popup login at a time

  function loginWithPopup(options) {
    if (popup && !popup.win.closed) {
      popup.win.focus();
      return popup.promise;
    }
    var o = options || {};
    // Opened at once, inside the click that called us: popup blockers allow only that.
    var w = 520;
    var h = 720;
    var left = Math.max(0, (screen.width - w) / 2);
    var top = Math.max(0, (screen.height - h) / 2);
    var win = window.open("", "portal-login", "popup,width=" + w + ",height=" + h +
      ",left=" + left + ",top=" + top); // prettier-ignore
    if (!win) return Promise.reject(PortalError("popup_blocked", "The browser blocked the popup."));
    var current = { win: win };
    current.promise = authRequest(o, "web_message")
      .then(function (req) {
        win.location.href = req.url;
        return new Promise(function (resolve, reject) {
          var settled = false;
          function done() {
            settled = true;
            window.removeEventListener("message", onMessage);
            clearInterval(watch);
          }
          function onMessage(e) {
            if (e.origin !== base() || e.source !== win) return;
            var d = e.data;
            if (!d || d.type !== "authorization_response" || !d.response) return;
            if (d.response.state !== req.state) return; // not this login's answer
            done();
            var err = authError(d.response);
            if (err) reject(err);
            else resolve(redeem(req, d.response.code));
          }
          var watch = setInterval(function () {
            if (!win.closed || settled) return;
            clearInterval(watch);
            // The answer is posted just before the window closes itself: let it arrive.
            setTimeout(function () {
              if (settled) return;
              done();
              reject(PortalError("popup_closed", "The login window was closed."));
            }, 500);
          }, 300);
          window.addEventListener("message", onMessage);
        });
      })
      .catch(function (err) {
        if (!win.closed && err.error !== "popup_closed") win.close();
        throw err;
      });
    popup = current;
    var clear = function () {
      if (popup === current) popup = null;
    };
    current.promise.then(clear, clear);
    return current.promise;
  }

  function loginWithRedirect(options) {
    var o = options || {};
    return authRequest(o).then(function (req) {
      var saved = { v: req.verifier, n: req.nonce, c: req.clientId, r: req.redirectUri, a: o.appState };
      sessionStorage.setItem(STORE + req.state, JSON.stringify(saved));
      location.assign(req.url);
    });
  }

  function handleRedirectCallback(url) {
    var u = new URL(url || location.href);
    var p = {};
    ["code", "state", "iss", "error", "error_description"].forEach(function (k) {
      p[k] = u.searchParams.get(k);
      u.searchParams.delete(k);
    });
    // The code leaves the address bar (and history) at once.
    if (!url) history.replaceState(history.state, "", u.pathname + u.search + u.hash);
    var saved = p.state && sessionStorage.getItem(STORE + p.state);
    if (!saved) {
      return Promise.reject(PortalError("invalid_state", "No login was started here for this answer."));
    }
    sessionStorage.removeItem(STORE + p.state);
    saved = JSON.parse(saved);
    var err = authError(p);
    if (err) return Promise.reject(err);
    var req = { verifier: saved.v, nonce: saved.n, clientId: saved.c, redirectUri: saved.r };
    return redeem(req, p.code).then(function (tokens) {
      tokens.appState = saved.a;
      return tokens;
    });
  }

  // --- <portal-login client-id="..."> ----------------------------------------------

  var BOX_CSS =
    ":host{display:inline-block}" +
    ".portal-login{display:inline-block;padding:24px 28px;border-radius:12px;background:#fff;" +
    "box-shadow:0 2px 12px rgba(0,0,0,.12);text-align:center}" +
    ".portal-login-logo{width:40px;height:40px;object-fit:contain}" +
    '.portal-login h2{margin:4px 0 12px;font:600 18px/1.4 system-ui,"PingFang SC",sans-serif}';

  function defineElement() {
    if (!window.customElements || customElements.get("portal-login")) return;

    class PortalLogin extends HTMLElement {
      static get observedAttributes() {
        return ["client-id", "lang", "auto-refresh", "size"];
      }

      connectedCallback() {
        if (!this.shadowRoot) {
          var shadow = this.attachShadow({ mode: "open" });
          make("style", "", shadow).textContent = BOX_CSS;
          var box = make("div", "portal-login", shadow);
          box.setAttribute("part", "box");
          var logo = make("img", "portal-login-logo", box);
          logo.src = base() + "/logo";
          logo.alt = "";
          this._title = make("h2", "", box);
          this._mount = make("div", "", box);
        }
        this._start();
      }

      disconnectedCallback() {
        if (this._qr) this._qr.stop();
      }

      attributeChangedCallback(name, old, value) {
        if (old !== value && this._qr && this.isConnected) this._start();
      }

      _start() {
        var self = this;
        var holder = this.closest("[lang]");
        var lang = this.getAttribute("lang") || (holder && holder.lang) || "";
        var auto = this.getAttribute("auto-refresh");
        var words = texts(lang, null, this.texts);
        this._title.textContent = words.title;
        function emit(name) {
          return function (detail) {
            self.dispatchEvent(
              new CustomEvent(name, { detail: detail, bubbles: true, composed: true })
            );
          };
        }
        if (this._qr) this._qr.stop();
        this._qr = qrLogin(this._mount, {
          clientId: this.getAttribute("client-id") || undefined,
          lang: lang || navigator.language,
          texts: this.texts,
          size: Number(this.getAttribute("size")) || 200,
          autoRefresh: auto !== null && auto !== "false",
          onScanned: emit("portal-scanned"),
          onSuccess: emit("portal-login"),
          onExpired: emit("portal-expired"),
          onCancel: emit("portal-cancel"),
          onError: emit("portal-error"),
        });
      }

      refresh() {
        if (this._qr) this._qr.refresh();
      }

      stop() {
        if (this._qr) this._qr.stop();
      }
    }

    customElements.define("portal-login", PortalLogin);
  }

  var Portal = {
    version: "1",
    baseUrl: script && script.src ? new URL(script.src).origin : location.origin,
    texts: TEXTS,
    qrLogin: qrLogin,
    loginWithPopup: loginWithPopup,
    loginWithRedirect: loginWithRedirect,
    handleRedirectCallback: handleRedirectCallback,
  };
  window.Portal = Portal;
  defineElement();
})(window, document);
