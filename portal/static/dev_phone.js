// The phone simulator (/dev/phone): plays the WeChat mini program against the
// portal's real mini-program API, same origin. The fake WeChat logs in USER for
// a wx.login code "USER.<anything>" and yields phone number DIGITS for a phone
// code "DIGITS.<anything>"; each code works once, so every call makes a new one.
// No inline script and no innerHTML: configuration comes in data-* attributes
// and every text goes in through textContent.
"use strict";

(function () {
  var app = document.getElementById("phone-app");
  if (!app) return;

  var API = {
    session: "/api/mp/session",
    scan: function (t) { return "/api/mp/tickets/" + encodeURIComponent(t) + "/scan"; },
    confirm: function (t) { return "/api/mp/tickets/" + encodeURIComponent(t) + "/confirm"; },
    cancel: function (t) { return "/api/mp/tickets/" + encodeURIComponent(t) + "/cancel"; },
  };
  var TICKET_RE = /^[A-Za-z0-9_-]{1,64}$/;
  var USER_RE = /^[A-Za-z0-9_]{1,32}$/;
  var PHONE_RE = /^[0-9]{1,20}$/;

  var messages = {};
  try {
    messages = JSON.parse(app.getAttribute("data-messages") || "{}");
  } catch (e) {
    messages = {};
  }

  function t(key, params) {
    var text = Object.prototype.hasOwnProperty.call(messages, key) ? messages[key] : key;
    if (params) {
      Object.keys(params).forEach(function (name) {
        text = text.split("{" + name + "}").join(String(params[name]));
      });
    }
    return text;
  }

  function $(id) { return document.getElementById(id); }
  var form = $("phone-form");
  var fields = {
    url: $("phone-url"),
    user: $("phone-user"),
    phone: $("phone-number"),
    nickname: $("phone-nickname"),
    avatar: $("phone-avatar"),
    appid: $("phone-appid"),
  };
  var buttons = [$("phone-scan"), $("phone-confirm"), $("phone-cancel")];
  var statusEl = $("phone-status");
  var scannedEl = $("phone-scanned");
  var logEl = $("phone-log");
  var logEmpty = $("phone-log-empty");

  // Mini-program session tokens, per mini program and WeChat user; memory only.
  var sessions = new Map();

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.className = "phone-status" + (kind ? " " + kind : "");
  }

  function setBusy(busy) {
    buttons.forEach(function (b) { b.disabled = busy; });
    form.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function random() {
    var bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  // A URL Scheme or URL Link WeChat made for a ticket (issue 20): its ticket is
  // what WeChat opens it with, asked of the fake when scanning.
  var lastTicket = null; // the ticket the last link opened
  var picked = null; // number matching: the number picked
  var APP_LINK_RE = /^(?:weixin:\/\/dl\/business\/\?t=|https:\/\/wxaurl\.cn\/)[A-Za-z0-9]+/;

  function ticketFrom(text) {
    text = text.trim();
    if (TICKET_RE.test(text)) return text;
    if (APP_LINK_RE.test(text)) return "link";
    var url;
    try {
      url = new URL(text);
    } catch (e) {
      return null;
    }
    // The QR's content (…/q/TICKET) or its image's address (…/api/qrcode/TICKET.png|.svg).
    var match = /^\/(?:q\/([^/]+?)\/?|api\/qrcode\/([^/]+)\.(?:png|svg))$/.exec(url.pathname);
    if (!match) return null;
    var ticket;
    try {
      ticket = decodeURIComponent(match[1] || match[2]);
    } catch (e) {
      return null;
    }
    return TICKET_RE.test(ticket) ? ticket : null;
  }

  function invalid(field, message) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
    setStatus(message, "error");
    return null;
  }

  // The form's values, checked; null (with the reason shown) when one is wrong.
  function read() {
    Object.keys(fields).forEach(function (k) { fields[k].removeAttribute("aria-invalid"); });
    var ticket = ticketFrom(fields.url.value);
    if (!ticket) return invalid(fields.url, t("bad_url"));
    var user = fields.user.value.trim();
    if (!USER_RE.test(user)) return invalid(fields.user, t("bad_user"));
    var phone = fields.phone.value.trim();
    if (phone && !PHONE_RE.test(phone)) return invalid(fields.phone, t("bad_phone"));
    var appid = fields.appid.value.trim();
    if (!appid) {
      fields.appid.closest("details").open = true;
      return invalid(fields.appid, t("no_appid"));
    }
    return {
      ticket: ticket === "link" ? lastTicket || ticket : ticket,
      user: user,
      phone: phone,
      appid: appid,
      nickname: fields.nickname.value.trim(),
      avatar: fields.avatar.value.trim(),
    };
  }

  function describeError(data) {
    if (!data || typeof data !== "object" || !data.error) return "";
    var hint = t("hint." + data.error);
    var text = data.error + (data.error_description ? ": " + data.error_description : "");
    return hint === "hint." + data.error ? text : hint + " (" + text + ")";
  }

  function log(entry) {
    var li = document.createElement("li");
    if (!entry.ok) li.className = "error";
    var head = document.createElement("div");
    head.className = "entry-head";
    var what = document.createElement("span");
    what.textContent = entry.method + " " + entry.path;
    var status = document.createElement("span");
    status.className = "entry-status";
    status.textContent = "→ " + (entry.status ? entry.status + " " + entry.statusText : t("network"));
    var time = document.createElement("time");
    var now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString();
    head.append(what, status, time);
    li.append(head);
    if (!entry.ok) {
      var err = document.createElement("p");
      err.className = "entry-error";
      err.textContent = describeError(entry.data) || t("failed");
      li.append(err);
    }
    if (entry.request !== undefined) {
      var req = document.createElement("pre");
      req.textContent = "→ " + JSON.stringify(entry.request, null, 2);
      li.append(req);
    }
    if (entry.body !== undefined) {
      var res = document.createElement("pre");
      res.textContent = "← " + (entry.data !== undefined ? JSON.stringify(entry.data, null, 2) : entry.body);
      li.append(res);
    }
    logEl.prepend(li);
    logEmpty.hidden = true;
  }

  async function call(path, body, token) {
    var headers = { accept: "application/json" };
    var init = { method: "POST", headers: headers, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (token) headers.authorization = "Bearer " + token;
    var entry = { method: "POST", path: path, request: body, ok: false, status: 0, statusText: "" };
    var response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      log(entry);
      return { ok: false, status: 0, data: null };
    }
    var text = await response.text();
    var data;
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = undefined;
    }
    entry.ok = response.ok;
    entry.status = response.status;
    entry.statusText = response.statusText;
    entry.body = text;
    entry.data = data;
    log(entry);
    return { ok: response.ok, status: response.status, data: data === undefined ? null : data };
  }

  function failed(result) {
    var text = result.status === 0 ? t("network") : describeError(result.data);
    setStatus(t("failed") + ": " + (text || result.status), "error");
    return null;
  }

  function sessionKey(v) { return v.appid + "\n" + v.user; }

  async function sessionFor(v, fresh) {
    var key = sessionKey(v);
    if (!fresh && sessions.has(key)) return sessions.get(key);
    setStatus(t("logging_in", { user: v.user }), "busy");
    var r = await call(API.session, { appid: v.appid, code: v.user + "." + random() });
    if (!r.ok || !r.data || !r.data.session_token) return failed(r);
    sessions.set(key, r.data.session_token);
    setStatus(t("logged_in"), "busy");
    return r.data.session_token;
  }

  // Calls send(token) with the user's session, logging in again once if it expired.
  async function withSession(v, send) {
    var token = await sessionFor(v, false);
    if (!token) return null;
    var r = await send(token);
    if (r.status === 401 && r.data && r.data.error === "invalid_session") {
      setStatus(t("session_expired"), "busy");
      sessions.delete(sessionKey(v));
      token = await sessionFor(v, true);
      if (!token) return null;
      r = await send(token);
    }
    return r;
  }

  function showScanned(data) {
    var pool = data.pool || {};
    $("phone-pool-name").textContent = pool.name || "";
    var logo = $("phone-pool-logo");
    if (typeof pool.logo_url === "string" && /^https?:\/\//i.test(pool.logo_url)) {
      logo.src = pool.logo_url;
      logo.hidden = false;
    } else {
      logo.removeAttribute("src");
      logo.hidden = true;
    }
    $("phone-client-name").textContent = data.client && data.client.name ? data.client.name : t("no_client");
    var meta = [];
    if (typeof data.expires_in === "number") meta.push(t("expires_in", { seconds: data.expires_in }));
    if (data.phone_required) meta.push(t("phone_required"));
    // Where the login was started and how the code reached the phone (issue 20).
    var ctx = data.context || {};
    var where = [ctx.browser, ctx.os, ctx.location, ctx.site].filter(Boolean).join(" · ");
    if (where) meta.push(where);
    if (data.scan_source) meta.push("scan_source: " + data.scan_source);
    $("phone-scan-meta").textContent = meta.join(" · ");
    // Number matching: one button per number offered; the one picked goes with Confirm.
    picked = null;
    var choices = $("phone-number-choices");
    choices.replaceChildren();
    (Array.isArray(data.number_choices) ? data.number_choices : []).forEach(function (n) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "phone-number";
      b.textContent = String(n);
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", function () {
        picked = Number(n);
        choices.querySelectorAll("button").forEach(function (other) {
          other.setAttribute("aria-pressed", other === b ? "true" : "false");
        });
      });
      choices.append(b);
    });
    $("phone-numbers").hidden = !choices.childElementCount;
    scannedEl.hidden = false;
  }

  async function run(action) {
    var values = read();
    if (!values) return;
    setBusy(true);
    try {
      await action(values);
    } finally {
      setBusy(false);
    }
  }

  // A pasted QR content is opened as WeChat's scanner does (issue 17): only under a
  // published link rule, and in the mini program that published it.
  async function openLink(v) {
    var text = fields.url.value.trim();
    v.scene = 1011; // scanned with the camera
    var appLink = APP_LINK_RE.test(text);
    if (!appLink && !/^https?:\/\/[^/]+\/q\//i.test(text)) return true; // a ticket or an image
    setStatus(t("opening"), "busy");
    var r = await call("/dev/phone/open", { content: text });
    if (!r.ok) {
      failed(r);
      return false;
    }
    if (r.data && typeof r.data.appid === "string") {
      fields.appid.value = r.data.appid;
      v.appid = r.data.appid;
    }
    if (appLink) {
      if (!r.data || !r.data.ticket) {
        failed(r);
        return false;
      }
      v.ticket = r.data.ticket;
      v.scene = r.data.scene;
      lastTicket = v.ticket; // confirm and cancel act on it
    }
    return true;
  }

  async function scan(v) {
    scannedEl.hidden = true;
    if (!(await openLink(v))) return;
    var r = await withSession(v, function (token) {
      setStatus(t("scanning"), "busy");
      // How WeChat opened the mini program (issue 20): the camera, or the link.
      return call(API.scan(v.ticket), v.scene ? { scene: v.scene } : undefined, token);
    });
    if (!r) return;
    if (!r.ok) return failed(r);
    showScanned(r.data || {});
    setStatus(t("scanned"), "ok");
  }

  async function confirm(v) {
    var r = await withSession(v, function (token) {
      var body = {};
      // A fresh phone code per call: WeChat's (and the fake's) work once.
      if (v.phone) body.phone_code = v.phone + "." + random();
      if (v.nickname) body.nickname = v.nickname;
      if (v.avatar) body.avatar_url = v.avatar;
      if (picked !== null) body.number = picked;
      setStatus(t("confirming"), "busy");
      return call(API.confirm(v.ticket), body, token);
    });
    if (!r) return;
    if (!r.ok) return failed(r);
    setStatus(t("confirmed"), "ok");
  }

  async function cancel(v) {
    var r = await withSession(v, function (token) {
      setStatus(t("cancelling"), "busy");
      return call(API.cancel(v.ticket), undefined, token);
    });
    if (!r) return;
    if (!r.ok) return failed(r);
    setStatus(t("cancelled"), "ok");
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    run(scan);
  });
  $("phone-confirm").addEventListener("click", function () { run(confirm); });
  $("phone-cancel").addEventListener("click", function () { run(cancel); });
  $("phone-clear").addEventListener("click", function () {
    logEl.replaceChildren();
    logEmpty.hidden = false;
  });
  Object.keys(fields).forEach(function (k) {
    fields[k].addEventListener("input", function () { fields[k].removeAttribute("aria-invalid"); });
  });

  (fields.url.value ? $("phone-scan") : fields.url).focus();
})();
