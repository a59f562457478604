// Hatchway console: one page, hash routes, plain DOM. Every call goes to /api/ as the
// signed-in user; the server decides (and enforces) what is allowed.
import { Terminal } from "./vendor/xterm.mjs";
import { FitAddon } from "./vendor/addon-fit.mjs";

const $ = (sel, root = document) => root.querySelector(sel);
const state = { me: null, poll: null, cleanup: null };

// ---- helpers ------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return "";
}

const csrf = () => cookie("__Host-hatchway-csrf") || cookie("hatchway-csrf");

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = csrf();
    init.body = JSON.stringify(body || {});
  }
  const res = await fetch(path, init);
  let data = {};
  try { data = await res.json(); } catch { data = {}; }
  if (!res.ok) {
    if (res.status === 401 && path !== "/api/login") showSignIn("Your sign-in has ended; sign in again.");
    throw new ApiError(res.status, data.error || "Error", data.message || res.statusText);
  }
  return data;
}

function when(seconds) {
  if (seconds === undefined || seconds === null || seconds === "") return "";
  const d = new Date(Number(seconds) * 1000);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function banner(text, bad = false) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
  b.classList.toggle("bad", bad);
}

function setView(title, ...content) {
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  if (state.poll) { clearInterval(state.poll); state.poll = null; }
  const view = $("#view");
  view.replaceChildren(el("h1", {}, title), ...content);
  view.hidden = false;
  $("#signin-view").hidden = true;
  document.title = `${title} · Hatchway`;
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.toggleAttribute("aria-current", location.hash.startsWith(`#/${a.dataset.nav}`));
    if (a.hasAttribute("aria-current")) a.setAttribute("aria-current", "page");
  }
  return view;
}

// ---- sign-in ------------------------------------------------------------------------------

function showSignIn(message = "") {
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  if (state.poll) { clearInterval(state.poll); state.poll = null; }
  state.me = null;
  $("#top").hidden = true;
  $("#view").hidden = true;
  $("#signin-view").hidden = false;
  $("#signin-error").textContent = message;
  document.title = "Sign in · Hatchway";
  $("#username").focus();
}

async function signIn(event) {
  event.preventDefault();
  const body = { username: $("#username").value, password: $("#password").value };
  if (!$("#code-row").hidden) body.code = $("#code").value;
  try {
    await api("POST", "/api/login", body);
  } catch (err) {
    if (err.code === "MfaRequired") {
      $("#code-row").hidden = false;
      $("#signin-error").textContent = err.message;
      $("#code").focus();
      return;
    }
    $("#signin-error").textContent = err.message;
    return;
  }
  $("#password").value = "";
  $("#code").value = "";
  $("#code-row").hidden = true;
  await start();
}

async function signOut() {
  try { await api("POST", "/api/logout"); } catch { /* signed out anyway */ }
  showSignIn("You have signed out.");
}

// ---- nodes --------------------------------------------------------------------------------

async function nodesView() {
  const text = el("input", { id: "node-filter", type: "search", placeholder: "name, id, IP…" });
  const tag = el("input", { id: "tag-filter", type: "search", placeholder: "key=value" });
  const count = el("p", { class: "muted", "aria-live": "polite" });
  const tbody = el("tbody");
  const table = el("table", {},
    el("caption", { class: "muted" }, "Managed nodes (updated every 5 seconds)"),
    el("thead", {}, el("tr", {}, ["Name", "Node id", "Status", "Platform", "IP",
      "Agent", "Last seen", "Tags", "Actions"].map((h) => el("th", { scope: "col", class: NARROW_HIDDEN.has(h) ? "hide-narrow" : "" }, h)))),
    tbody);
  setView("Nodes",
    el("form", { class: "inline", role: "search", onsubmit: (e) => e.preventDefault() },
      el("label", {}, "Filter", text), el("label", {}, "Tag", tag)),
    count, el("div", { class: "table-wrap" }, table));
  let nodes = [];
  const render = () => {
    const q = text.value.trim().toLowerCase();
    const [tk, tv] = tag.value.includes("=") ? tag.value.split("=", 2) : [tag.value, null];
    const shown = nodes.filter((n) => {
      const tags = Object.fromEntries((n.Tags || []).map((t) => [t.Key, t.Value]));
      const hay = [n.Name, n.InstanceId, n.IPAddress, n.ComputerName, n.PlatformName,
        n.PingStatus].join(" ").toLowerCase();
      if (q && !hay.includes(q)) return false;
      if (tk.trim() && !(tk.trim() in tags)) return false;
      if (tv !== null && tags[tk.trim()] !== tv.trim()) return false;
      return true;
    });
    count.textContent = `${shown.length} of ${nodes.length} node(s)`;
    tbody.replaceChildren(...shown.map(nodeRow));
  };
  const load = async () => {
    try {
      nodes = (await api("GET", "/api/nodes")).Nodes || [];
      render();
    } catch (err) {
      if (err.status !== 401) count.textContent = err.message;
    }
  };
  text.addEventListener("input", render);
  tag.addEventListener("input", render);
  await load();
  // Polled only while the page is seen: every poll is an audited API call.
  state.poll = setInterval(() => { if (document.visibilityState === "visible") load(); }, 5000);
}

// Columns a narrow window leaves out (the row keeps name, id, status and the actions).
const NARROW_HIDDEN = new Set(["Platform", "IP", "Agent", "Last seen", "Tags"]);

function nodeRow(n) {
  const online = n.PingStatus === "Online";
  const allowed = Boolean(n.CanStartSession);
  const title = !allowed ? "Your policies do not allow sessions on this node"
    : online ? "" : "The node is not online";
  const tags = (n.Tags || []).map((t) => el("span", { class: "tag" }, `${t.Key}=${t.Value}`));
  const actions = [];
  if (allowed) {
    actions.push(el("button", { type: "button", disabled: !online, title,
      onclick: () => startSession(n.InstanceId, {}) }, "Start session"));
    actions.push(" ", el("button", { type: "button", class: "secondary", disabled: !online,
      "aria-label": `Options for a session on ${n.InstanceId}`,
      onclick: () => sessionForm(n.InstanceId) }, "Options…"));
  } else {
    actions.push(el("span", { class: "muted" }, "not allowed"));
  }
  return el("tr", {},
    el("td", {}, n.Name || n.ComputerName || ""),
    el("td", { class: "mono" }, n.InstanceId),
    el("td", { class: `status-${n.PingStatus}` }, n.PingStatus),
    el("td", { class: "hide-narrow" }, [n.PlatformName, n.PlatformVersion].filter(Boolean).join(" ")),
    el("td", { class: "mono hide-narrow" }, n.IPAddress || ""),
    el("td", { class: "hide-narrow" }, n.AgentVersion || ""),
    el("td", { class: "hide-narrow" }, when(n.LastPingDateTime)),
    el("td", { class: "hide-narrow" }, tags),
    el("td", { class: "actions" }, actions));
}

function sessionForm(target) {
  const reason = el("input", { id: "s-reason", maxlength: 256 });
  const doc = el("input", { id: "s-document", list: "s-documents", value: "SSM-SessionManagerRunShell" });
  const params = el("input", { id: "s-params", placeholder: '{"command": ["top"]}' });
  const error = el("p", { class: "error", role: "alert" });
  const dialog = el("dialog", { "aria-labelledby": "s-title" },
    el("h2", { id: "s-title" }, `Session on ${target}`),
    el("form", { method: "dialog", onsubmit: async (e) => {
      e.preventDefault();
      let parameters;
      if (params.value.trim()) {
        try { parameters = JSON.parse(params.value); } catch {
          error.textContent = "Parameters must be JSON, e.g. {\"command\": [\"top\"]}"; return;
        }
      }
      const ok = await startSession(target, { reason: reason.value, documentName: doc.value, parameters }, error);
      if (ok) dialog.close();
    } },
      el("label", { for: "s-reason" }, "Reason"), reason,
      el("label", { for: "s-document" }, "Document"), doc,
      el("datalist", { id: "s-documents" },
        ["SSM-SessionManagerRunShell", "AWS-StartInteractiveCommand"].map((d) => el("option", { value: d }))),
      el("label", { for: "s-params" }, "Parameters (JSON)"), params,
      el("div", {}, el("button", { type: "submit" }, "Start"), " ",
        el("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Cancel")),
      error));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

async function startSession(target, options, errorNode) {
  try {
    const body = { target };
    if (options.reason) body.reason = options.reason;
    if (options.documentName) body.documentName = options.documentName;
    if (options.parameters) body.parameters = options.parameters;
    const started = await api("POST", "/api/sessions", body);
    location.hash = `#/terminal/${encodeURIComponent(started.SessionId)}`;
    return true;
  } catch (err) {
    if (errorNode) errorNode.textContent = err.message; else banner(err.message, true);
    return false;
  }
}

// ---- terminal -----------------------------------------------------------------------------

function terminalView(sessionId) {
  const status = el("span", { id: "term-status", role: "status" }, "connecting…");
  const nodeLabel = el("span", { class: "mono" });
  const endBtn = el("button", { type: "button", class: "danger" }, "End session");
  const box = el("div", { class: "term-box" });
  setView("Terminal",
    el("div", { class: "term-head" },
      el("span", {}, "Session ", el("span", { class: "mono", id: "term-session" }, sessionId)),
      el("span", {}, "Node ", nodeLabel), status, endBtn,
      el("span", { class: "muted hide-narrow" }, "Copy: Ctrl+Shift+C · Paste: Ctrl+Shift+V")),
    box);
  const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000,
    fontFamily: "ui-monospace, monospace", fontSize: 14 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  term.focus();

  const enc = new TextEncoder();
  let ws = null, received = 0, inputBase = 0, pending = new Uint8Array(0), ended = false,
    retry = 0, timer = null, ackTimer = null, closedByUs = false, helloSeen = false, refused = 0;

  const sendInput = () => {
    if (!ws || ws.readyState !== WebSocket.OPEN || pending.length === 0) return;
    const msg = new Uint8Array(8 + pending.length);
    new DataView(msg.buffer).setBigUint64(0, BigInt(inputBase));
    msg.set(pending, 8);
    ws.send(msg);
  };
  const sendSize = () => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  };
  term.onData((data) => {
    if (ended) return;
    const bytes = enc.encode(data);
    const next = new Uint8Array(pending.length + bytes.length);
    next.set(pending); next.set(bytes, pending.length);
    // Only the new bytes go now; all of `pending` again after a reconnect.
    const msg = new Uint8Array(8 + bytes.length);
    new DataView(msg.buffer).setBigUint64(0, BigInt(inputBase + pending.length));
    msg.set(bytes, 8);
    pending = next;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(msg);
  });
  term.onResize(sendSize);
  term.attachCustomKeyEventHandler((e) => {
    if (e.type === "keydown" && e.ctrlKey && e.shiftKey && e.code === "KeyC") {
      if (term.hasSelection()) navigator.clipboard?.writeText(term.getSelection());
      return false;
    }
    if (e.type === "keydown" && e.ctrlKey && e.shiftKey && e.code === "KeyV") {
      navigator.clipboard?.readText().then((t) => term.paste(t)).catch(() => {});
      return false;
    }
    return true;
  });
  const onWindowResize = () => { try { fit.fit(); } catch { /* hidden */ } };
  window.addEventListener("resize", onWindowResize);
  const observer = new ResizeObserver(onWindowResize);
  observer.observe(box);

  const ack = () => {
    ackTimer = null;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ack", offset: received }));
  };
  const finish = (message, exitCode) => {
    ended = true;
    const code = exitCode === null || exitCode === undefined ? "" : ` (exit code ${exitCode})`;
    status.textContent = "ended";
    endBtn.disabled = true;
    banner(`Session ${sessionId} ended: ${message}${code}`);
  };
  const connect = () => {
    timer = null;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/api/sessions/${encodeURIComponent(sessionId)}/terminal?offset=${received}`);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        const m = JSON.parse(ev.data);
        if (m.type === "hello") {
          retry = 0;  // a terminal that answers: retries count afresh
          refused = 0;
          helloSeen = true;
          nodeLabel.textContent = m.target;
          status.textContent = "connected";
          if (!ended) banner("");
          if (m.outputStart > received) {
            term.write("\x1b[2m[earlier output is no longer kept]\x1b[0m\r\n");
            received = m.outputStart;
          }
          const taken = m.inputOffset - inputBase;
          if (taken > 0) { pending = pending.slice(Math.min(taken, pending.length)); inputBase = m.inputOffset; }
          sendSize();
          sendInput();
        } else if (m.type === "inputAck") {
          const taken = m.offset - inputBase;
          if (taken > 0) { pending = pending.slice(Math.min(taken, pending.length)); inputBase = m.offset; }
        } else if (m.type === "notice") {
          term.write(`\r\n\x1b[33mhatchway: ${m.message}\x1b[0m\r\n`);
        } else if (m.type === "ended") {
          finish(m.message, m.exitCode);
        }
        return;
      }
      const view = new DataView(ev.data);
      const offset = Number(view.getBigUint64(0));
      let data = new Uint8Array(ev.data, 8);
      if (offset + data.length <= received) return;
      if (offset < received) data = data.subarray(received - offset);
      received += data.length;
      term.write(data);
      if (!ackTimer) ackTimer = setTimeout(ack, 50);
    };
    ws.onclose = (ev) => {
      ws = null;
      const hadHello = helloSeen;
      helloSeen = false;
      if (closedByUs || ended) return;
      if (ev.code === 4000) { status.textContent = "opened elsewhere"; banner("This terminal was opened in another window.", true); return; }
      status.textContent = "reconnecting…";
      banner("The connection to the server dropped; reconnecting…", true);
      const delay = Math.min(5000, 250 * 2 ** retry++);
      timer = setTimeout(() => {
        fetch("/api/sessions/" + encodeURIComponent(sessionId), { credentials: "same-origin" })
          .then((r) => {
            if (r.status === 401) { showSignIn("Your sign-in has ended; sign in again."); return; }
            // The server answers, yet the terminal did not: no such session, or the bridge no
            // longer has this terminal (its page was away longer than the resume window, or
            // the server restarted). A network loss, by contrast, keeps us trying.
            if (!hadHello) refused++;
            if (r.status === 404 || refused > 3) {
              finish("this terminal is no longer available");
              return;
            }
            connect();
          })
          .catch(() => { timer = setTimeout(connect, delay); });
      }, delay);
    };
  };
  endBtn.addEventListener("click", () => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "terminate" }));
  });
  connect();
  // For the end-to-end tests (and a curious operator's console): what the page holds.
  window.hatchwayTerminal = { term, received: () => received, pending: () => pending.length };
  state.cleanup = () => {
    delete window.hatchwayTerminal;
    closedByUs = true;
    window.removeEventListener("resize", onWindowResize);
    observer.disconnect();
    if (timer) clearTimeout(timer);
    if (ws) ws.close(1000, "page left");
    term.dispose();
    banner("");
  };
}

// ---- sessions -----------------------------------------------------------------------------

async function sessionsView() {
  const f = {
    state: el("select", { id: "f-state" }, el("option", { value: "Active" }, "Active"), el("option", { value: "History" }, "Past")),
    target: el("input", { id: "f-target", placeholder: "mi-…" }),
    owner: el("input", { id: "f-owner", placeholder: "user ARN" }),
    status: el("select", { id: "f-status" }, ["", "Connecting", "Connected", "Disconnected", "Terminating", "Terminated", "Failed"].map((s) => el("option", { value: s }, s || "any"))),
    after: el("input", { id: "f-after", type: "date" }),
    before: el("input", { id: "f-before", type: "date" }),
  };
  const msg = el("p", { class: "muted", "aria-live": "polite" });
  const tbody = el("tbody");
  setView("Sessions",
    el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); load(); } },
      el("label", {}, "State", f.state), el("label", {}, "Node", f.target),
      el("label", {}, "User", f.owner), el("label", {}, "Status", f.status),
      el("label", {}, "From", f.after), el("label", {}, "To", f.before),
      el("button", { type: "submit" }, "Filter")),
    msg,
    el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Session", "Node", "User", "Status", "Started", "Ended", "Reason", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      tbody)));
  const load = async () => {
    const q = new URLSearchParams();
    for (const [k, input] of Object.entries(f)) if (input.value) q.set(k, input.value);
    try {
      const page = await api("GET", `/api/sessions?${q}`);
      const rows = page.Sessions || [];
      msg.textContent = `${rows.length} session(s)`;
      tbody.replaceChildren(...rows.map((s) => el("tr", {},
        el("td", { class: "mono" }, el("a", { href: `#/session/${encodeURIComponent(s.SessionId)}` }, s.SessionId)),
        el("td", { class: "mono" }, s.Target), el("td", {}, (s.Owner || "").split("/").pop()),
        el("td", { class: `status-${s.Status}` }, s.Status), el("td", {}, when(s.StartDate)),
        el("td", {}, when(s.EndDate)), el("td", {}, s.Reason || ""),
        el("td", {}, sessionActions(s, load)))));
    } catch (err) {
      if (err.status !== 401) msg.textContent = err.message;
    }
  };
  f.state.addEventListener("change", load);
  await load();
  state.poll = setInterval(() => {
    if (f.state.value === "Active" && document.visibilityState === "visible") load();
  }, 5000);
}

function sessionActions(s, reload) {
  const out = [];
  if (s.CanAttach) out.push(el("a", { href: `#/terminal/${encodeURIComponent(s.SessionId)}` }, "Open terminal"), " ");
  if (s.CanTerminate) {
    out.push(el("button", { type: "button", class: "danger", onclick: async () => {
      if (!confirm(`Terminate session ${s.SessionId}?`)) return;
      try { await api("POST", `/api/sessions/${encodeURIComponent(s.SessionId)}/terminate`); banner(`Session ${s.SessionId} terminated.`); reload(); }
      catch (err) { banner(err.message, true); }
    } }, "Terminate"), " ");
  }
  if (s.CanPlay && !["Connecting"].includes(s.Status)) out.push(el("a", { href: `#/session/${encodeURIComponent(s.SessionId)}` }, "Details / play"));
  return out;
}

async function sessionView(sessionId) {
  const view = setView(`Session ${sessionId}`);
  let s;
  try { s = await api("GET", `/api/sessions/${encodeURIComponent(sessionId)}`); }
  catch (err) { view.append(el("p", { class: "error" }, err.message)); return; }
  const conns = s.Connections || [];
  view.append(
    el("dl", { class: "details" },
      ...[["Node", s.Target], ["User", s.Owner], ["Status", s.Status], ["Document", s.DocumentName],
        ["Reason", s.Reason || "—"], ["Started", when(s.StartDate)], ["Ended", when(s.EndDate) || "—"],
        ["Exit code", s.ExitCode ?? "—"], ["Details", s.Details || "—"]].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])),
    el("div", {}, sessionActions({ ...s, CanPlay: false }, () => sessionView(sessionId))),
    conns.length ? el("div", {}, el("h2", {}, "Forwarded connections"), el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Destination", "Opened", "Closed", "Bytes in", "Bytes out", "Error"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, conns.map((c) => el("tr", {}, el("td", { class: "mono" }, c.Destination), el("td", {}, when(c.OpenedDate)),
        el("td", {}, when(c.ClosedDate)), el("td", {}, c.BytesIn), el("td", {}, c.BytesOut), el("td", {}, c.Error || ""))))))) : "");
  if (s.CanPlay && s.Recording) {
    const speed = el("select", { id: "speed" }, [0.5, 1, 2, 4, 8].map((v) => el("option", { value: v, selected: v === 1 }, `${v}×`)));
    const holder = el("div", { class: "player", id: "player" });
    view.append(el("h2", {}, "Recording"), el("label", {}, "Speed ", speed), holder);
    let player = null;
    const make = () => {
      if (player) player.dispose();
      holder.replaceChildren();
      player = window.AsciinemaPlayer.create(`/api/sessions/${encodeURIComponent(sessionId)}/recording`, holder,
        { speed: Number(speed.value), fit: "width", controls: true, idleTimeLimit: 2 });
      window.hatchwayPlayer = player;
    };
    speed.addEventListener("change", make);
    make();
    state.cleanup = () => { if (player) player.dispose(); };
  } else if (s.CanPlay) {
    view.append(el("p", { class: "muted" }, "No recording for this session."));
  }
}

// ---- audit --------------------------------------------------------------------------------

async function auditView() {
  const f = { user: el("input", { id: "a-user" }), action: el("input", { id: "a-action", placeholder: "StartSession" }),
    resource: el("input", { id: "a-resource", placeholder: "mi-… or session id" }),
    after: el("input", { id: "a-after", type: "date" }), before: el("input", { id: "a-before", type: "date" }) };
  const msg = el("p", { class: "muted", "aria-live": "polite" });
  const tbody = el("tbody");
  setView("Audit trail",
    el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); load(); } },
      el("label", {}, "User", f.user), el("label", {}, "Event", f.action),
      el("label", {}, "Resource", f.resource),
      el("label", {}, "From", f.after), el("label", {}, "To", f.before),
      el("button", { type: "submit" }, "Filter")),
    msg, el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Time", "User", "Event", "Resources", "Outcome", "Decision", "Source IP"].map((h) => el("th", { scope: "col" }, h)))),
      tbody)));
  const load = async () => {
    const q = new URLSearchParams();
    for (const [k, input] of Object.entries(f)) if (input.value) q.set(k, input.value);
    try {
      const page = await api("GET", `/api/audit?${q}`);
      const events = page.Events || [];
      msg.textContent = `${events.length} event(s)`;
      tbody.replaceChildren(...events.map((e) => el("tr", {},
        el("td", {}, when(e.EventTime)), el("td", {}, e.Username || ""), el("td", {}, e.EventName || ""),
        el("td", { class: "mono" }, (e.Resources || []).map((r) => r.ResourceName).join(", ")),
        el("td", {}, e.Outcome || ""), el("td", {}, e.Decision || ""), el("td", { class: "mono" }, e.SourceIp || ""))));
    } catch (err) { if (err.status !== 401) msg.textContent = err.message; }
  };
  await load();
}

// ---- account (TOTP) -----------------------------------------------------------------------

function accountView() {
  const me = state.me;
  const out = el("div");
  const error = el("p", { class: "error", role: "alert" });
  const code = el("input", { id: "mfa-code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 8 });
  const view = setView("Account", el("p", {}, "Signed in as ", el("strong", {}, me.username), el("span", { class: "muted" }, ` (${me.arn})`)), out);
  if (me.mfaEnabled) {
    out.append(el("h2", {}, "Second factor"), el("p", {}, "An authenticator app is required at sign-in."),
      el("form", { onsubmit: async (e) => {
        e.preventDefault();
        try { await api("POST", "/api/mfa/disable", { code: code.value }); me.mfaEnabled = false; accountView(); banner("Second factor removed."); }
        catch (err) { error.textContent = err.message; }
      } }, el("label", { for: "mfa-code" }, "Current code"), code, el("button", { type: "submit", class: "danger" }, "Remove second factor"), error));
  } else {
    const setup = el("div");
    out.append(el("h2", {}, "Second factor"), el("p", {}, "Add an authenticator app (TOTP) to require a code at sign-in."),
      el("button", { type: "button", id: "mfa-enrol", onclick: async () => {
        try {
          const r = await api("POST", "/api/mfa/enrol");
          setup.replaceChildren(
            el("p", {}, "Add this key to your authenticator app, then enter the code it shows."),
            el("p", {}, "Key: ", el("code", { id: "mfa-secret" }, r.secret)),
            el("p", {}, el("a", { href: r.uri }, "Open in an authenticator app")),
            el("form", { onsubmit: async (e) => {
              e.preventDefault();
              try { await api("POST", "/api/mfa/confirm", { code: code.value }); me.mfaEnabled = true; accountView(); banner("Second factor enabled."); }
              catch (err) { error.textContent = err.message; }
            } }, el("label", { for: "mfa-code" }, "Code"), code, el("button", { type: "submit" }, "Confirm"), error));
          code.focus();
        } catch (err) { error.textContent = err.message; setup.append(error); }
      } }, "Set up authenticator"), setup);
  }
  return view;
}

// ---- routing ------------------------------------------------------------------------------

async function route() {
  if (!state.me) return;
  banner("");
  const [, page, arg] = location.hash.match(/^#\/([a-z]+)\/?(.*)$/) || [];
  const id = arg ? decodeURIComponent(arg) : "";
  if (page === "terminal" && id) terminalView(id);
  else if (page === "session" && id) await sessionView(id);
  else if (page === "sessions") await sessionsView();
  else if (page === "audit" && state.me.permissions.lookupEvents) await auditView();
  else if (page === "account") accountView();
  else if (page === "nodes") await nodesView();
  else location.hash = "#/nodes";
  if (page !== "terminal") $("#main").focus({ preventScroll: true });
}

async function start() {
  try {
    state.me = await api("GET", "/api/me");
  } catch {
    showSignIn();
    return;
  }
  $("#top").hidden = false;
  $("#who").textContent = state.me.username;
  $('[data-nav="audit"]').hidden = !state.me.permissions.lookupEvents;
  await route();
}

$("#signin-form").addEventListener("submit", signIn);
$("#signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
start();
