// tag-gateway preview page: starts a session, long-polls its traces, renders them newest first.
"use strict";

const API = "/admin/api/preview";
const STORE_KEY = "tg-preview-session";
const state = { session: null, next: 0, traces: new Map(), open: new Set(), poll: 0 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

// --- JSON, formatted and coloured (built from text nodes: nothing is parsed as HTML) ----------

function jsonNode(value, indent = 0) {
  const pad = "  ".repeat(indent);
  if (value === null) return el("span", { class: "j-lit" }, "null");
  if (Array.isArray(value)) {
    if (!value.length) return document.createTextNode("[]");
    const out = [document.createTextNode("[\n")];
    value.forEach((v, i) => {
      out.push(document.createTextNode(pad + "  "), jsonNode(v, indent + 1));
      out.push(document.createTextNode(i < value.length - 1 ? ",\n" : "\n"));
    });
    out.push(document.createTextNode(pad + "]"));
    return el("span", {}, out);
  }
  if (typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return document.createTextNode("{}");
    const out = [document.createTextNode("{\n")];
    keys.forEach((k, i) => {
      out.push(document.createTextNode(pad + "  "), el("span", { class: "j-key" }, JSON.stringify(k)));
      out.push(document.createTextNode(": "), jsonNode(value[k], indent + 1));
      out.push(document.createTextNode(i < keys.length - 1 ? ",\n" : "\n"));
    });
    out.push(document.createTextNode(pad + "}"));
    return el("span", {}, out);
  }
  if (typeof value === "string") return el("span", { class: "j-str" }, JSON.stringify(value));
  if (typeof value === "number") return el("span", { class: "j-num" }, String(value));
  return el("span", { class: "j-lit" }, String(value));
}

function pre(value) {
  if (typeof value === "string") {
    try {
      return el("pre", {}, jsonNode(JSON.parse(value)));
    } catch (e) {
      return el("pre", {}, value);
    }
  }
  return el("pre", {}, jsonNode(value));
}

function fold(key, label, body) {
  const node = el("details", { "data-key": key }, el("summary", {}, label), body);
  if (state.open.has(key)) node.open = true;
  node.addEventListener("toggle", () => {
    if (node.open) state.open.add(key); else state.open.delete(key);
  });
  return node;
}

// --- one trace ---------------------------------------------------------------------------------

function clock(seconds) {
  const d = new Date(seconds * 1000);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function latest(dest) {
  const last = dest.attempts && dest.attempts[dest.attempts.length - 1];
  if (!last) return dest.status;
  return last.verdict === "retry" ? "failed" : last.verdict;
}

function chips(trace) {
  const seen = new Map();
  for (const event of trace.events) {
    for (const [name, dest] of Object.entries(event.destinations)) {
      const status = latest(dest);
      const key = name + "|" + status;
      seen.set(key, { name, status, n: (seen.get(key)?.n || 0) + 1 });
    }
  }
  return [...seen.values()].map(({ name, status, n }) =>
    el("span", { class: "chip", title: `${name}: ${status}` },
      el("span", { class: `badge ${status}` }, status.replace("_", " ")),
      name + (n > 1 ? ` ×${n}` : "")));
}

function kvTable(rows) {
  if (!rows.length) return el("p", { class: "muted" }, "none");
  return el("table", { class: "kv" },
    rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
}

function requestPart(trace) {
  const r = trace.request;
  const parts = [
    el("h3", {}, "Request"),
    el("div", { class: "mono" }, `${r.method} ${r.path}`),
    el("div", { class: "label" }, "Query parameters"),
    kvTable(r.query || []),
    el("div", { class: "label" }, "Headers"),
    kvTable(Object.entries(r.headers || {})),
  ];
  if (r.cookies && Object.keys(r.cookies).length) {
    parts.push(el("div", { class: "label" }, "Cookies"), kvTable(Object.entries(r.cookies)));
  }
  if (r.body_json !== undefined) parts.push(el("div", { class: "label" }, "Body"), pre(r.body_json));
  if (r.body_form) parts.push(el("div", { class: "label" }, "Body (form)"), kvTable(r.body_form));
  if (r.body_text) parts.push(el("div", { class: "label" }, "Body"), el("pre", {}, r.body_text));
  if (r.body_note) parts.push(el("div", { class: "label" }, "Body: " + r.body_note));
  return parts;
}

function attemptPart(key, a, i) {
  return el("div", { class: "attempt" },
    el("div", { class: "head" },
      el("span", { class: `badge ${a.verdict === "retry" ? "failed" : a.verdict}` }, a.verdict),
      el("strong", {}, a.http_status === null ? "no HTTP status" : `HTTP ${a.http_status}`),
      el("span", { class: "muted" }, `${a.latency_ms} ms · ${clock(a.at)} · attempt ${i + 1}`),
      a.message ? el("span", { class: "reason" }, a.message) : null),
    el("div", { class: "url" }, `${a.method} ${a.url}`),
    el("div", { class: "pair" },
      el("div", {}, el("div", { class: "label" }, "Request body"),
        a.request_body === null ? el("p", { class: "muted" }, "none") : pre(a.request_body)),
      el("div", {}, el("div", { class: "label" }, "Response (first 4 KiB)"),
        a.response_body ? pre(a.response_body) : el("p", { class: "muted" }, "empty"))));
}

function destPart(key, name, dest) {
  const status = latest(dest);
  const attempts = dest.attempts || [];
  return el("div", { class: `dest ${status}` },
    el("div", { class: "head" },
      el("span", { class: "name" }, name),
      el("span", { class: `badge ${dest.status}` }, dest.status.replace("_", " ")),
      status !== dest.status ? [el("span", { class: "arrow" }, "→"),
        el("span", { class: `badge ${status}` }, status)] : null,
      dest.reason ? el("span", { class: "reason" }, dest.reason) : null,
      dest.status === "queued" && !attempts.length ? el("span", { class: "muted" }, "waiting for delivery…") : null),
    dest.payload !== null && dest.payload !== undefined
      ? fold(`${key}:payload`, "Stored payload", pre(dest.payload)) : null,
    attempts.map((a, i) => attemptPart(key, a, i)));
}

function eventPart(trace, event, i) {
  const key = `${trace.id}:${i}`;
  const purposes = Object.entries(event.consent || {}).map(([p, c]) =>
    el("span", { class: `purpose ${c.state}`, title: `decided by ${c.signal || "no signal"}` },
      p, ": ", el("b", {}, c.state), c.signal ? ` (${c.signal})` : ""));
  return el("div", { class: "event" },
    el("div", { class: "head" },
      el("span", { class: "ename" }, event.event_name),
      el("span", { class: "eid" }, event.event_id)),
    el("div", { class: "consent" }, purposes),
    fold(`${key}:event`, "Canonical event", pre(event.event)),
    Object.entries(event.destinations).map(([name, d]) => destPart(`${key}:${name}`, name, d)));
}

function shellQuote(s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}

function curlOf(trace) {
  const r = trace.request;
  const query = (r.query || []).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  const url = location.origin + r.path + (query.length ? "?" + query.join("&") : "");
  const out = ["curl -i"];
  if (r.method !== "GET" && r.method !== "HEAD") out.push("-X " + r.method);
  out.push(shellQuote(url));
  for (const [k, v] of Object.entries(r.headers || {})) {
    if (k === "Content-Type" && r.body_form) continue;
    out.push("-H " + shellQuote(`${k}: ${v}`));
  }
  if (state.session) out.push("-H " + shellQuote(`X-Tag-Gateway-Preview: ${state.session.id}`));
  if (trace.source === "server") out.push('-H "Authorization: Bearer $GATEWAY_API_KEY"');
  if (r.body_json !== undefined) out.push("--data-raw " + shellQuote(JSON.stringify(r.body_json)));
  if (r.body_form) {
    out.push("-H 'Content-Type: application/x-www-form-urlencoded'");
    const form = r.body_form.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
    out.push("--data-raw " + shellQuote(form.join("&")));
  }
  if (r.body_text) out.push("--data-raw " + shellQuote(r.body_text));
  return out.join(" \\\n  ");
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (e) {
    button.textContent = "Select and copy below";
  }
  setTimeout(() => { button.textContent = button.dataset.label || "Copy"; }, 1500);
}

function detailPart(trace) {
  const curlBox = el("textarea", { class: "curl", readonly: true, hidden: true, "aria-label": "curl command" });
  const copyButton = el("button", {
    "data-label": "Copy as curl",
    onclick: (ev) => {
      ev.stopPropagation();
      curlBox.value = curlOf(trace);
      curlBox.hidden = false;
      copyText(curlBox.value, ev.currentTarget);
    },
  }, "Copy as curl");
  const source = el("div", {},
    el("h3", {}, "Source"),
    el("div", {}, el("strong", {}, trace.source), " ",
      el("span", { class: `badge ${trace.outcome}` }, trace.outcome),
      trace.reason ? el("span", { class: "reason" }, " " + trace.reason) : null));
  const events = [el("h3", {}, `Events (${trace.events.length})`)];
  if (!trace.events.length) events.push(el("p", { class: "muted" }, "No event came of this hit."));
  trace.events.forEach((e, i) => events.push(eventPart(trace, e, i)));
  if (trace.events_not_traced) {
    events.push(el("p", { class: "muted" }, `and ${trace.events_not_traced} more events of this batch, not traced`));
  }
  return el("div", { class: "detail" },
    el("div", { class: "actions" }, copyButton,
      el("span", { class: "muted" }, "personal data is masked in traces, and so in the command")),
    curlBox, requestPart(trace), source, events);
}

function hitNode(trace) {
  const open = state.open.has(`hit:${trace.id}`);
  const names = trace.events.map((e) => [el("span", { class: "ename" }, e.event_name), " ",
    el("span", { class: "eid" }, e.event_id), "  "]);
  const summary = el("div", { class: "summary", role: "button", tabindex: "0", "aria-expanded": String(open) },
    el("span", { class: "time" }, el("span", { class: "caret" }, open ? "▾" : "▸"), clock(trace.received_at)),
    el("span", { class: "source" }, el("span", { class: `badge ${trace.outcome}` }, trace.outcome), " ", trace.source),
    el("span", { class: "path", title: trace.request.path }, `${trace.request.method} ${trace.request.path}`),
    el("span", { class: "events" }, names.length ? names : el("span", { class: "muted" }, trace.reason || "no events")),
    el("span", { class: "chips" }, chips(trace)));
  const node = el("article", { class: "hit", "data-id": String(trace.id), "data-seq": String(trace.seq) }, summary);
  if (open) node.append(detailPart(trace));
  const toggle = () => {
    const key = `hit:${trace.id}`;
    if (state.open.has(key)) state.open.delete(key); else state.open.add(key);
    // The node clicked may have been replaced by a newer version of the trace meanwhile.
    const current = $("hits").querySelector(`article.hit[data-id="${trace.id}"]`) || node;
    current.replaceWith(hitNode(state.traces.get(trace.id)));
  };
  summary.addEventListener("click", toggle);
  summary.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(); } });
  return node;
}

function matches(trace) {
  const q = $("filter").value.trim().toLowerCase();
  return !q || trace.events.some((e) => String(e.event_id).toLowerCase().includes(q));
}

function render() {
  const list = $("hits");
  const traces = [...state.traces.values()].sort((a, b) => b.id - a.id).filter(matches);
  const existing = new Map([...list.querySelectorAll("article.hit")].map((n) => [n.dataset.id, n]));
  const nodes = traces.map((t) => {
    const old = existing.get(String(t.id));
    if (old && old.dataset.seq === String(t.seq)) return old;
    const node = hitNode(t);
    if (!old) node.classList.add("fresh");
    return node;
  });
  list.replaceChildren(...(nodes.length ? nodes : [el("p", { class: "empty", id: "empty" },
    state.traces.size ? "No traced hit matches the filter." : "No traced hits yet.")]));
  const total = state.traces.size;
  $("count").textContent = total ? `${traces.length} of ${total} hits` : "";
}

// --- the session and the long poll -------------------------------------------------------------

function showSession() {
  const s = state.session;
  $("idle").hidden = !!s;
  $("live").hidden = !s;
  if (!s) return;
  $("sid").textContent = s.id;
  tick();
}

function tick() {
  if (!state.session) return;
  const left = Math.max(0, state.session.expires_at - Date.now() / 1000);
  $("expires").textContent = left > 60 ? `${Math.round(left / 60)} min` : `${Math.round(left)} s`;
}

async function start() {
  const response = await fetch(API, { method: "POST", headers: { "Content-Type": "application/json" } });
  if (response.status !== 201) {
    alert(`Could not start a session (HTTP ${response.status}).`);
    return;
  }
  useSession(await response.json());
}

function useSession(session) {
  state.session = session;
  state.next = 0;
  state.traces.clear();
  sessionStorage.setItem(STORE_KEY, JSON.stringify(session));
  showSession();
  render();
  poll(++state.poll);
}

async function poll(generation) {
  while (state.session && generation === state.poll) {
    try {
      const url = `${API}/${encodeURIComponent(state.session.id)}/traces?after=${state.next}`;
      const response = await fetch(url, { cache: "no-store" });
      if (generation !== state.poll) return;
      if (response.status === 404) {
        sessionStorage.removeItem(STORE_KEY);
        state.session = null;
        showSession();
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      for (const trace of data.traces) state.traces.set(trace.id, trace);
      state.next = data.next;
      if (data.traces.length) render();
    } catch (e) {
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function makeLink() {
  const to = $("shop").value.trim();
  if (!to) return;
  const link = `${location.origin}/preview/${encodeURIComponent(state.session.id)}?to=${encodeURIComponent(to)}`;
  $("link").textContent = link;
  $("link-row").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  $("start").addEventListener("click", start);
  $("restart").addEventListener("click", start);
  $("make-link").addEventListener("click", makeLink);
  $("shop").addEventListener("keydown", (ev) => { if (ev.key === "Enter") makeLink(); });
  $("filter").addEventListener("input", render);
  for (const button of document.querySelectorAll("button.copy")) {
    button.dataset.label = button.textContent;
    button.addEventListener("click", () => copyText($(button.dataset.copy).textContent, button));
  }
  setInterval(tick, 10_000);
  const saved = sessionStorage.getItem(STORE_KEY);
  if (saved) {
    const session = JSON.parse(saved);
    if (session.expires_at > Date.now() / 1000) { useSession(session); return; }
    sessionStorage.removeItem(STORE_KEY);
  }
  showSession();
});
