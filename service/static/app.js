// The owner's page. Signs every request with this browser's own device key (WebCrypto Ed25519,
// non-extractable, kept in IndexedDB), in the registry's RFC 9421 profile; signs revocations as
// cameo documents (DSSE envelope over RFC 8785 canonical JSON). No private key is ever exported,
// and the sign-in link's ticket seed (in the URL fragment) is never sent anywhere.
"use strict";

(() => {
  const enc = new TextEncoder();
  const PAGE = 25;
  const PKCS8_ED25519 = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
  const T_CLAIM = "application/vnd.cameo.device-claim.v1+json";
  const T_REVOCATION = "application/vnd.cameo.device-revocation.v1+json";
  const state = { me: null, skew: 0, uses: [], filter: "all", page: 0, cameo: null, grants: [] };
  const $ = (id) => document.getElementById(id);

  // -- bytes --------------------------------------------------------------------------------------
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let i = 0;
    for (const p of parts) { out.set(p, i); i += p.length; }
    return out;
  }
  function b64(bytes) {
    let s = "";
    for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
    return btoa(s);
  }
  function unb64(text) {
    const bin = atob(text);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }
  function unb64url(text) {
    let s = text.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return unb64(s);
  }
  function b64url(bytes) { return b64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""); }
  function hex(bytes) { return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join(""); }
  function random(n) { return crypto.getRandomValues(new Uint8Array(n)); }
  async function sha256(data) { return new Uint8Array(await crypto.subtle.digest("SHA-256", data)); }

  // RFC 8785 for what these documents hold (strings, arrays, objects): keys sorted by UTF-16 code
  // units, ECMAScript serialisation of the values.
  function canonical(v) {
    if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
    if (v !== null && typeof v === "object") {
      return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
    }
    return JSON.stringify(v);
  }
  function rfc3339(ms) { return new Date(ms).toISOString().slice(0, 19) + "Z"; }
  function serverNow() { return Date.now() + state.skew * 1000; }
  async function keyIdOf(raw) { return "ed25519:" + hex(await sha256(raw)).slice(0, 32); }

  // a signed cameo document: DSSE envelope, signature over PAE(type, canonical body)
  async function seal(type, payload, key, publicRaw) {
    const body = enc.encode(canonical(payload));
    const t = enc.encode(type);
    const pae = concat(enc.encode("DSSEv1 " + t.length + " "), t, enc.encode(" " + body.length + " "), body);
    const sig = await crypto.subtle.sign({ name: "Ed25519" }, key, pae);
    const env = { payload: b64(body), payloadType: type, signatures: [{ keyid: await keyIdOf(publicRaw), sig: b64(sig) }] };
    return enc.encode(canonical(env));
  }

  // -- the device key, kept by IndexedDB (a CryptoKey is stored as itself: never exported) --------
  function db() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open("cameo-owner-page", 1);
      req.onupgradeneeded = () => req.result.createObjectStore("device");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  async function store(op, value) {
    const d = await db();
    return new Promise((resolve, reject) => {
      const tx = d.transaction("device", op === "get" ? "readonly" : "readwrite");
      const os = tx.objectStore("device");
      const req = op === "get" ? os.get("current") : op === "put" ? os.put(value, "current") : os.delete("current");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  // -- HTTP ------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, doc) {
      super((doc && (doc.detail || doc.title)) || ("HTTP " + status));
      this.status = status;
      this.doc = doc || {};
    }
  }
  async function signed(method, path, body, signer) {
    const who = signer || state.me;
    const raw = body === undefined ? new Uint8Array(0) : enc.encode(JSON.stringify(body));
    const digest = "sha-256=:" + b64(await sha256(raw)) + ":";
    const created = Math.floor(serverNow() / 1000);
    const params = '("@method" "@path" "@query" "content-digest");created=' + created + ';nonce="' + b64url(random(18)) +
      '";keyid="device:' + who.deviceId + '";alg="ed25519";tag="cameo"';
    const base = ['"@method": ' + method, '"@path": ' + path, '"@query": ?', '"content-digest": ' + digest,
      '"@signature-params": ' + params].join("\n");
    const sig = await crypto.subtle.sign({ name: "Ed25519" }, who.key, enc.encode(base));
    const headers = { "Accept": "application/json", "Content-Digest": digest, "Signature-Input": "sig1=" + params,
      "Signature": "sig1=:" + b64(sig) + ":" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : raw,
      credentials: "omit", cache: "no-store", redirect: "error" });
    let doc = null;
    try { doc = await resp.json(); } catch (e) { doc = null; }
    if (!resp.ok) throw new ApiError(resp.status, doc);
    return doc;
  }
  async function syncClock() {
    try {
      const r = await fetch("/healthz", { cache: "no-store", credentials: "omit" });
      const date = Date.parse(r.headers.get("date") || "");
      if (!Number.isNaN(date) && Math.abs(date - Date.now()) > 30000) state.skew = Math.round((date - Date.now()) / 1000);
    } catch (e) { /* offline: the signed calls will say so */ }
  }

  // -- signing in --------------------------------------------------------------------------------------
  function takeTicket() {
    const frag = new URLSearchParams(location.hash.slice(1));
    const h = frag.get("h"), t = frag.get("t"), k = frag.get("k");
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);  // the seed leaves the address bar
    return h && t && k ? { h, t, k } : null;
  }
  async function claim(ticket) {
    const seed = unb64url(ticket.k);
    if (seed.length !== 32 || !/^[a-z][a-z0-9_-]{1,31}$/.test(ticket.h)) throw new Error("This sign-in link is damaged: copy it whole.");
    const r = await fetch("/v1/web/delegations/" + encodeURIComponent(ticket.t), { cache: "no-store", credentials: "omit" });
    const offer = await r.json().catch(() => null);
    if (!r.ok) throw new ApiError(r.status, offer);
    const envelope = JSON.parse(new TextDecoder().decode(unb64(offer.document)));
    const bodyBytes = unb64(envelope.payload);
    const delegation = JSON.parse(new TextDecoder().decode(bodyBytes));
    if (delegation.owner !== ticket.h || delegation.id !== ticket.t) throw new Error("This sign-in link names another delegation.");
    const ticketKey = await crypto.subtle.importKey("pkcs8", concat(Uint8Array.from(PKCS8_ED25519), seed),
      { name: "Ed25519" }, false, ["sign"]);
    seed.fill(0);
    const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    const deviceId = "dev-" + hex(await sha256(publicRaw)).slice(0, 24);
    const doc = await seal(T_CLAIM, {
      created: rfc3339(serverNow()), delegation: delegation.id, delegation_digest: "sha256:" + hex(await sha256(bodyBytes)),
      device_id: deviceId, device_key: b64(publicRaw), owner: delegation.owner,
    }, ticketKey, unb64(delegation.ticket_key));
    const me = { handle: delegation.owner, deviceId, key: pair.privateKey, publicRaw, delegation: delegation.id };
    const got = await signed("POST", "/v1/web/claims", { claim: b64(doc) }, me);
    me.notAfter = got.not_after;
    me.powers = got.powers;
    const old = await store("get").catch(() => null);
    await store("put", me);
    if (old && old.deviceId !== me.deviceId) {  // this browser signed in again: its previous key signs itself out
      await signed("DELETE", "/v1/cameos/" + encodeURIComponent(old.handle) + "/devices/" + encodeURIComponent(old.deviceId),
        undefined, old).catch(() => {});
    }
    return me;
  }

  function gate(title, text, hint) {
    $("app").hidden = true;
    $("signout").hidden = true;
    $("who").textContent = "";
    $("gate").hidden = false;
    $("gate-title").textContent = title;
    $("gate-text").textContent = text;
    $("gate-hint").hidden = !hint;
    $("gate-hint").replaceChildren();
    if (hint) $("gate-hint").append("On your computer, run ", el("code", { text: hint }), " and open the link it prints, in this browser.");
  }
  function newLinkHint(handle) { return "cameo web " + (handle || "YOUR-HANDLE"); }
  function sentence(text) {
    const t = String(text || "").trim();
    return t ? t[0].toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? "" : ".") : "";
  }
  async function signedOut(err) {
    const handle = state.me && state.me.handle;
    await store("delete").catch(() => {});
    state.me = null;
    gate("Signed out", sentence((err && err.message) || "This browser is no longer signed in to the page"), newLinkHint(handle));
  }

  // -- rendering -------------------------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }
  function when(ts) {
    if (!ts) return "—";
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return ts;
    return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  function short(value, n) {
    if (!value) return "";
    if (value.startsWith("sha256:")) return "sha256:" + value.slice(7, 7 + (n || 12)) + "…";
    const i = value.indexOf("_");
    return i > 0 && value.length > i + 1 + (n || 12) ? value.slice(0, i + 1 + (n || 12)) + "…" : value;
  }
  function cell(label, ...kids) {
    const nil = kids.length === 1 && (kids[0] === "—" || kids[0] === "");
    return el("td", { role: "cell", "data-label": label, class: nil ? "nil" : null }, ...kids);
  }
  function pill(text, kind) { return el("span", { class: "pill " + kind, text }); }

  const EVENTS = {
    "account:create": "Account created", "cameo:enroll": "Enrolled", "cameo:delete": "Cameo deleted",
    "consent:grant:create": "Grant made", "consent:grant:revoke": "Grant revoked", "consent:withdraw": "Consent withdrawn",
    "token:mint": "Token asked for", "gate:check": "Dry-run check", "gate:release": "Used by a generator",
    "gate:output": "Output signed", "screen:match": "Your likeness found in media", "registry:integrity:alert": "Integrity alert",
  };
  function eventOf(entry) {
    const name = entry.event || "";
    const base = entry.outcome ? name.slice(0, name.length - entry.outcome.length - 1) : name;
    return EVENTS[base] || base;
  }

  function renderCameo(c) {
    const s = $("summary");
    s.replaceChildren();
    const status = $("cameo-status");
    if (!c) {
      status.className = "pill neutral";
      status.textContent = "no cameo";
      $("cameo-lede").textContent = "You have no cameo here: it was deleted, or never enrolled. Your history stays below.";
      $("withdraw").disabled = true;
      $("delete").disabled = true;
      $("take-back").hidden = true;
      return;
    }
    const active = c.status === "active";
    status.className = "pill " + (active ? "allowed" : "withheld");
    status.textContent = c.status;
    $("cameo-lede").textContent = active
      ? "Your face and voice are sealed under the consent you signed. Only the grants below can use them."
      : "You withdrew consent: nothing can use your likeness. Delete the cameo to destroy the templates too.";
    $("take-back").hidden = false;
    $("withdraw").disabled = !active;
    $("delete").disabled = false;
    const consent = c.consent || {};
    const encoders = (c.templates || []).map((t) => t.modality + ": " + t.encoder.split("@")[0] + " (" + t.samples + " samples)");
    const rows = [
      ["Modalities", (consent.modalities || []).join(", ") || "—"],
      ["Encoders", encoders.join("; ") || "—"],
      ["Enrolled", when(c.created)],
      ["Audience", consent.audience || "—"],
      ["Purposes", (consent.purposes || []).join(", ") || "—"],
      ["Restrictions", (consent.restrictions || []).join("; ") || "none"],
      ["Consent expires", consent.expires ? when(consent.expires) : "never (until you withdraw)"],
      ["Last used", when(c.last_used)],
    ];
    for (const [k, v] of rows) s.append(el("div", { class: "kv" }, el("dt", { text: k }), el("dd", { text: v })));
  }

  function filtered() {
    if (state.filter === "all") return state.uses;
    if (state.filter === "denied") return state.uses.filter((e) => e.outcome === "denied" || e.outcome === "withheld");
    return state.uses.filter((e) => e.outcome === "allowed");
  }
  function grantees(ids) {  // who a revocation took a grant from
    if (!Array.isArray(ids) || !ids.length) return "";
    const names = new Set(ids.map((id) => (state.grants.find((g) => g.id === id) || {}).grantee).filter(Boolean));
    return [...names].join(", ");
  }
  function renderUses() {
    const body = $("uses-body");
    body.replaceChildren();
    const list = filtered();
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const slice = list.slice(state.page * PAGE, state.page * PAGE + PAGE);
    for (const e of slice) {
      const d = e.detail || {};
      const outcome = e.outcome || "recorded";
      const kind = outcome === "allowed" ? "allowed" : outcome === "denied" ? "denied" : outcome === "withheld" ? "withheld" : "neutral";
      const reasons = (d.reasons || []).filter((r) => r && r.message);
      const why = reasons.length ? el("ul", { class: "reasons" }, ...reasons.map((r) => el("li", { title: r.code, text: r.message }))) : "—";
      const outs = (e.outputs || []).length
        ? el("div", { class: "outs" }, ...e.outputs.map((o) => el("code", { title: o, text: short(o, 10) })),
            e.event === "gate:output" || e.event.startsWith("gate:release") ? el("span", { class: "prov", text: "C2PA-signed by the registry" }) : null)
        : "—";
      let what = eventOf(e);
      if (d.device) what += " (from this page)";
      body.append(el("tr", { role: "row", class: "row-" + kind },
        cell("When", el("time", { datetime: e.ts, text: when(e.ts) })),
        cell("Result", outcome === "recorded" ? "" : pill(outcome, kind)),
        cell("What", what),
        cell("Grantee", e.grantee || grantees(d.revoked) || "—"),
        cell("Generator", e.generator || "—"),
        cell("Purpose", d.purpose || "—"),
        cell("Reasons", why),
        cell("Output", outs)));
    }
    if (!slice.length) {
      body.append(el("tr", { role: "row" }, el("td", { role: "cell", colspan: "8", class: "empty", text: "Nothing to show." })));
    }
    $("page-info").textContent = list.length ? (state.page * PAGE + 1) + "–" + (state.page * PAGE + slice.length) + " of " + list.length : "";
    $("newer").disabled = state.page === 0;
    $("older").disabled = state.page >= pages - 1;
    const allowed = state.uses.filter((e) => e.outcome === "allowed").length;
    const denied = state.uses.filter((e) => e.outcome === "denied" || e.outcome === "withheld").length;
    $("counts").replaceChildren(el("span", { class: "count allowed" }, el("strong", { text: String(allowed) }), " allowed"),
      el("span", { class: "count denied" }, el("strong", { text: String(denied) }), " denied"),
      el("span", { class: "count" }, el("strong", { text: String(state.uses.length) }), " events in all"));
    renderChart();
  }
  function renderChart() {
    const days = 14, chart = $("chart");
    chart.replaceChildren();
    const today = new Date(serverNow()); today.setUTCHours(0, 0, 0, 0);
    const buckets = [];
    for (let i = days - 1; i >= 0; i--) buckets.push({ t: today.getTime() - i * 86400000, a: 0, d: 0 });
    for (const e of state.uses) {
      if (!e.outcome) continue;
      const t = Date.parse(e.ts);
      const b = buckets.find((x) => t >= x.t && t < x.t + 86400000);
      if (!b) continue;
      if (e.outcome === "allowed") b.a++; else b.d++;
    }
    const max = Math.max(1, ...buckets.map((b) => b.a + b.d));
    chart.parentElement.hidden = buckets.every((b) => b.a + b.d === 0);  // nothing in two weeks: no chart
    for (const b of buckets) {
      const col = el("div", { class: "bar", title: new Date(b.t).toISOString().slice(0, 10) + ": " + b.a + " allowed, " + b.d + " denied" });
      const den = el("span", { class: "seg denied" }), al = el("span", { class: "seg allowed" });
      den.style.height = (100 * b.d / max) + "%";  // CSSOM, not a style attribute: allowed by the CSP
      al.style.height = (100 * b.a / max) + "%";
      col.append(den, al);
      chart.append(col);
    }
  }

  function renderGrants(list) {
    const body = $("grants-body");
    body.replaceChildren();
    $("grants-empty").hidden = list.length > 0;
    $("grants").parentElement.hidden = list.length === 0;
    const order = { active: 0, "used up": 1, expired: 2, revoked: 3, tampered: 4 };
    const sorted = [...list].sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || (a.not_after < b.not_after ? -1 : 1));
    for (const g of sorted) {
      const kind = g.state === "active" ? "allowed" : g.state === "revoked" || g.state === "tampered" ? "denied" : "neutral";
      let action = "";
      if (g.state === "active" || g.state === "used up") {
        action = el("button", { type: "button", class: "btn danger small", "aria-label": "Revoke grant " + g.id + " to " + g.grantee, text: "Revoke" });
        action.addEventListener("click", () => revokeGrant(g, action));
      }
      const stateText = g.state === "revoked" && g.revoked_at ? "revoked " + when(g.revoked_at) : g.state;
      body.append(el("tr", { role: "row", "data-grant": g.id },
        cell("Grant", el("code", { class: "id", text: g.id })),
        cell("Grantee", g.grantee),
        cell("Generators", (g.generators || []).join(", ")),
        cell("Modalities", (g.modalities || []).join(", ") || "—"),
        cell("Uses left", g.uses_left + " of " + g.max_uses),
        cell("Expires", when(g.not_after)),
        cell("State", pill(stateText, kind)),
        cell("Action", action)));
    }
  }

  function renderDevices(list) {
    const cur = $("devices"), past = $("past");
    cur.replaceChildren();
    past.replaceChildren();
    let nPast = 0;
    for (const d of list) {
      const live = d.state === "active" || d.state === "link not yet used";
      const name = d.device_id ? (d.label || "A browser") : "Sign-in link";
      const meta = [];
      if (d.device_id) meta.push("signed in " + when(d.claimed), "last used " + when(d.last_used), "until " + when(d.not_after));
      else meta.push(d.state === "link not yet used" ? "not used yet; valid until " + when(d.claim_by) : d.state);
      if (d.revoked_at) meta.push("signed out " + when(d.revoked_at));
      const item = el("li", { class: "device" + (d.this_device ? " mine" : "") },
        el("div", { class: "device-main" },
          el("strong", { text: name }), d.this_device ? pill("this browser", "allowed") : null,
          live ? null : pill(d.state, "neutral"),
          el("div", { class: "meta", text: meta.join(" · ") }),
          el("code", { class: "id", text: d.device_id || d.delegation_id })));
      if (live) {
        const label = d.this_device ? "Sign out this browser" : d.device_id ? "Remove " + name + " (" + d.device_id + ")" : "Cancel sign-in link " + d.delegation_id;
        const b = el("button", { type: "button", class: "btn quiet small", "aria-label": label, text: d.this_device ? "Sign out" : d.device_id ? "Remove" : "Cancel" });
        b.addEventListener("click", () => removeDevice(d, b));
        item.append(b);
        cur.append(item);
      } else {
        past.append(item);
        nPast++;
      }
    }
    $("past-wrap").hidden = nPast === 0;
    $("past-summary").textContent = nPast + " past device" + (nPast === 1 ? "" : "s") + " and links";
  }

  // -- loading -------------------------------------------------------------------------------------------
  async function load() {
    const h = encodeURIComponent(state.me.handle);
    const [cameo, usage, grants, devices] = await Promise.all([
      signed("GET", "/v1/cameos/" + h).catch((e) => { if (e.status === 404) return null; throw e; }),
      signed("GET", "/v1/cameos/" + h + "/usage"),
      signed("GET", "/v1/cameos/" + h + "/grants"),
      signed("GET", "/v1/cameos/" + h + "/devices"),
    ]);
    state.cameo = cameo;
    state.uses = [...(usage.entries || [])].reverse();
    state.grants = grants.grants || [];
    renderCameo(cameo);
    renderUses();
    renderGrants(state.grants);
    renderDevices(devices.devices || []);
    $("who").textContent = state.me.handle;
    $("signout").hidden = false;
    $("gate").hidden = true;
    $("app").hidden = false;
  }
  async function guarded(fn) {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) { await signedOut(e); return undefined; }
      toast(e.message || String(e), true);
      return undefined;
    }
  }

  // -- acts ----------------------------------------------------------------------------------------------
  function toast(text, bad) {
    const t = $("toast");
    t.textContent = text;
    t.className = "toast show" + (bad ? " bad" : "");
    t.setAttribute("role", bad ? "alert" : "status");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.className = "toast"; }, 6000);
  }
  function confirmAct(title, text, ok) {
    const dlg = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = ok;
    return new Promise((resolve) => {
      const done = (v) => { dlg.close(); $("confirm-ok").onclick = null; $("confirm-cancel").onclick = null; dlg.oncancel = null; resolve(v); };
      $("confirm-ok").onclick = () => done(true);
      $("confirm-cancel").onclick = () => done(false);
      dlg.oncancel = (ev) => { ev.preventDefault(); done(false); };
      dlg.showModal();
      $("confirm-cancel").focus();
    });
  }
  async function revocation(scope, target) {
    const me = state.me;
    const doc = await seal(T_REVOCATION, {
      created: rfc3339(serverNow()), delegation: me.delegation, device_id: me.deviceId, id: "rev_" + hex(random(16)),
      owner: me.handle, scope, target,
    }, me.key, me.publicRaw);
    return signed("POST", "/v1/web/revocations", { document: b64(doc) });
  }
  async function revokeGrant(g, button) {
    button.disabled = true;
    await guarded(async () => {
      await revocation("grant", g.id);
      await load();
      toast("Revoked: " + g.grantee + " can no longer use your likeness under grant " + short(g.id, 8) + ".");
    });
    button.disabled = false;
  }
  async function withdraw() {
    if (!await confirmAct("Withdraw consent?", "Every grant is revoked and no one can use your likeness from the next " +
      "request on, tokens already issued included. Your templates stay sealed until you delete the cameo.", "Withdraw everything")) return;
    await guarded(async () => {
      const r = await revocation("consent", "*");
      await load();
      toast("Consent withdrawn; " + r.revoked_grants.length + " grant(s) revoked.");
    });
  }
  async function del() {
    if (!await confirmAct("Delete your cameo for good?", "This withdraws consent and destroys the key your face and voice " +
      "templates are sealed with. Nobody, the registry included, can recover them. It cannot be undone.", "Delete for good")) return;
    await guarded(async () => {
      const r = await signed("DELETE", "/v1/cameos/" + encodeURIComponent(state.me.handle));
      await load();
      toast("Deleted: the data key is destroyed, " + r.templates_destroyed + " template(s) gone.");
    });
  }
  async function removeDevice(d, button) {
    button.disabled = true;
    await guarded(async () => {
      await signed("DELETE", "/v1/cameos/" + encodeURIComponent(state.me.handle) + "/devices/" + encodeURIComponent(d.this_device ? d.device_id : d.delegation_id));
      if (d.this_device) { await signedOut({ message: "You signed this browser out. Its key is deleted." }); return; }
      await load();
      toast((d.device_id ? "Removed " + (d.label || "the device") : "Cancelled the sign-in link") + ".");
    });
    button.disabled = false;
  }

  // -- start -------------------------------------------------------------------------------------------
  async function start() {
    for (const b of document.querySelectorAll("[data-filter]")) {
      b.addEventListener("click", () => {
        state.filter = b.dataset.filter;
        state.page = 0;
        for (const x of document.querySelectorAll("[data-filter]")) x.setAttribute("aria-pressed", String(x === b));
        renderUses();
      });
    }
    $("newer").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); renderUses(); });
    $("older").addEventListener("click", () => { state.page += 1; renderUses(); });
    $("withdraw").addEventListener("click", withdraw);
    $("delete").addEventListener("click", del);
    $("signout").addEventListener("click", () => guarded(async () => {
      await signed("DELETE", "/v1/cameos/" + encodeURIComponent(state.me.handle) + "/devices/" + encodeURIComponent(state.me.deviceId));
      await signedOut({ message: "You signed this browser out. Its key is deleted." });
    }));
    if (!window.crypto || !crypto.subtle || !window.indexedDB) {
      gate("This browser cannot sign in", "The page needs WebCrypto (Ed25519) and IndexedDB, over HTTPS or on this computer.");
      return;
    }
    const ticket = takeTicket();
    await syncClock();
    if (ticket) {
      try {
        state.me = await claim(ticket);
      } catch (e) {
        const reasons = e instanceof ApiError ? (e.doc.reasons || []).map((r) => r.message) : [];
        gate("This sign-in link cannot be used", sentence(reasons.length ? reasons.join("; ") : (e.message || String(e))), newLinkHint(ticket.h));
        return;
      }
    } else {
      state.me = await store("get").catch(() => null);
      if (!state.me) {
        gate("Not signed in", "Open the one-time sign-in link that `cameo web` prints on your computer.", newLinkHint(null));
        return;
      }
    }
    await guarded(load);
  }
  document.addEventListener("DOMContentLoaded", () => { start().catch((e) => gate("Something went wrong", e.message || String(e))); });
})();
