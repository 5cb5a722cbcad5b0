// bitswarm's web page: a Transmission RPC client in plain JavaScript.
//
// Remote strings (names, labels, errors, folders) only ever reach the page as textContent or
// input values, never as markup. The list is virtualised: only the rows in view exist, and a
// poll changes only the cells whose text changed, so 10,000 torrents cost what 50 do.

// From the origin, never from the page's address: opened as http://user:password@host/, that
// address carries the credentials, and fetch() refuses a URL that does (the browser sends the
// password it was given for this origin by itself).
const RPC = `${location.origin}/transmission/rpc`;
const STREAM = `${location.origin}/transmission/stream`;
const PAGE = `${location.origin}${location.pathname}`;
const POLL_MS = 2000;
// After this long without an answer, "recently-active" may have missed changes: get all again.
const STALE_MS = 50000;
// A poll is held by the daemon (`bitswarm-wait`) until something changed, or this long: an
// idle page costs an answer per 25 s, and a change shows at once.
const WAIT_S = 25;
const FIELDS = [
  "id", "name", "status", "error", "errorString", "sizeWhenDone", "percentDone",
  "recheckProgress", "metadataPercentComplete", "rateDownload", "rateUpload", "eta", "uploadRatio",
  "peersConnected", "labels", "isFinished", "queuePosition", "addedDate",
  "downloadLimit", "downloadLimited", "uploadLimit", "uploadLimited",
];

// What a torrent that only transfers (its state and settings unchanged) is sent of: its figures.
const MOVING_FIELDS = [
  "id", "error", "errorString", "percentDone", "recheckProgress", "metadataPercentComplete",
  "rateDownload", "rateUpload", "eta", "uploadRatio", "peersConnected", "isFinished",
];

const STATUS = ["Stopped", "Queued to verify", "Verifying", "Queued", "Downloading", "Queued to seed", "Seeding"];

// ---- the RPC ----------------------------------------------------------------------------------

let sessionId = "";

// The session id comes with the page's own assets (a HEAD of this page), so the first call
// does not draw a 409; a 409 later (the daemon restarted) still hands out the new one.
async function learnSessionId() {
  const r = await fetch(PAGE, { method: "HEAD", cache: "no-store" });
  sessionId = r.headers.get("X-Transmission-Session-Id") || "";
}

class RpcError extends Error {}

// POSTs `body` to `url` with the session id; a 409 hands out the id (the daemon restarted, or
// none was known yet), and the request is made again with it, once.
async function post(url, body, signal) {
  let r;
  for (let attempt = 0; attempt < 2; attempt++) {
    r = await fetch(url, {
      method: "POST",
      headers: { "X-Transmission-Session-Id": sessionId, "Content-Type": "application/json" },
      body,
      cache: "no-store",
      signal,
    });
    if (r.status !== 409) break;
    const id = r.headers.get("X-Transmission-Session-Id") || "";
    // Another session id: the daemon restarted, and what it removed before is not in its
    // `removed`: the next poll gets every torrent.
    if (sessionId && id !== sessionId) lastPoll = 0;
    sessionId = id;
  }
  return r;
}

// Calls `method`; resolves to its arguments, or throws an RpcError whose message is the
// RPC's `result` string (or the HTTP failure).
async function rpc(method, args = {}) {
  let r;
  try {
    r = await post(RPC, JSON.stringify({ method, arguments: args }));
  } catch (e) {
    throw new RpcError("the daemon does not answer");
  }
  if (r.status === 409) throw new RpcError("no session id");
  if (!r.ok) throw new RpcError(`HTTP ${r.status} ${r.statusText}`);
  const reply = await r.json();
  if (reply.result !== "success") throw new RpcError(reply.result || "failed");
  return reply.arguments || {};
}

// ---- units ------------------------------------------------------------------------------------

const UNITS = ["B", "kB", "MB", "GB", "TB", "PB"];

export function size(n) {
  if (!(n > 0)) return "0 B";
  let i = 0;
  while (n >= 1000 && i < UNITS.length - 1) { n /= 1000; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${UNITS[i]}`;
}

export function rate(n) {
  return n > 0 ? `${size(n)}/s` : "";
}

export function eta(s) {
  if (s < 0 || s === undefined) return "";
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function ratio(r) {
  if (r === -2) return "∞";
  if (r < 0 || r === undefined) return "";
  return r.toFixed(2);
}

function progress(t) {
  if (t.status === 1 || t.status === 2) return t.recheckProgress;
  if (t.metadataPercentComplete < 1) return t.metadataPercentComplete;
  return t.percentDone;
}

function stateText(t) {
  if (t.error) return `Error: ${t.errorString}`;
  if (t.metadataPercentComplete < 1 && t.status === 4) return "Fetching metadata";
  if (t.status === 0 && t.isFinished) return "Finished";
  return STATUS[t.status] || String(t.status);
}

function stateClass(t) {
  if (t.error) return "error";
  return ["stopped", "checking", "checking", "queued", "downloading", "queued", "seeding"][t.status] || "";
}

// ---- the columns -------------------------------------------------------------------------------

// key: sort key; text: a cell's text. Each column's cell is a span of class c-<id>.
const COLUMNS = [
  { id: "name", title: "Name", key: (t) => t.name.toLowerCase(), text: (t) => t.name },
  { id: "size", title: "Size", key: (t) => t.sizeWhenDone, text: (t) => size(t.sizeWhenDone) },
  { id: "progress", title: "Progress", key: progress, text: (t) => `${Math.floor(progress(t) * 1000) / 10}%` },
  { id: "state", title: "State", key: (t) => (t.error ? -1 : t.status), text: stateText },
  { id: "down", title: "Down", key: (t) => t.rateDownload, text: (t) => rate(t.rateDownload) },
  { id: "up", title: "Up", key: (t) => t.rateUpload, text: (t) => rate(t.rateUpload) },
  { id: "eta", title: "ETA", key: (t) => (t.eta < 0 ? Infinity : t.eta), text: (t) => eta(t.eta) },
  { id: "ratio", title: "Ratio", key: (t) => (t.uploadRatio === -2 ? Infinity : t.uploadRatio), text: (t) => ratio(t.uploadRatio) },
  { id: "peers", title: "Peers", key: (t) => t.peersConnected, text: (t) => String(t.peersConnected) },
  { id: "labels", title: "Labels", key: (t) => t.labels.join(",").toLowerCase(), text: (t) => t.labels.join(", ") },
];

// ---- state -------------------------------------------------------------------------------------

const torrents = new Map(); // id -> torrent (the RPC's fields)
let shown = []; // the torrents that pass the filters, sorted
const selected = new Set(); // ids
let anchor = null; // the id a shift-click extends from
let cursor = 0; // index in `shown` of the keyboard's row
let sort = { column: "name", descending: false };
let rowHeight = 0;
let dirty = true; // `shown` needs filtering and sorting again
let labelsKnown = "";

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function showError(where, message) {
  const p = $(where);
  p.textContent = message;
  p.hidden = !message;
}

// ---- filtering and sorting ---------------------------------------------------------------------

function passes(t, state, label, words) {
  switch (state) {
    case "active": if (!(t.rateDownload > 0 || t.rateUpload > 0 || t.status === 2)) return false; break;
    case "downloading": if (t.status !== 4 && t.status !== 3) return false; break;
    case "seeding": if (t.status !== 6 && t.status !== 5) return false; break;
    case "paused": if (t.status !== 0) return false; break;
    case "checking": if (t.status !== 1 && t.status !== 2) return false; break;
    case "queued": if (t.status !== 1 && t.status !== 3 && t.status !== 5) return false; break;
    case "finished": if (!t.isFinished) return false; break;
    case "error": if (!t.error) return false; break;
  }
  if (label && !t.labels.includes(label)) return false;
  if (words.length) {
    const name = t.name.toLowerCase();
    for (const w of words) if (!name.includes(w)) return false;
  }
  return true;
}

function refilter() {
  const state = $("state-filter").value;
  const label = $("label-filter").value;
  const words = $("search").value.toLowerCase().split(/\s+/).filter(Boolean);
  const column = COLUMNS.find((c) => c.id === sort.column);
  const keyed = [];
  for (const t of torrents.values()) if (passes(t, state, label, words)) keyed.push([column.key(t), t]);
  const dir = sort.descending ? -1 : 1;
  keyed.sort((a, b) => (a[0] < b[0] ? -dir : a[0] > b[0] ? dir : a[1].id - b[1].id));
  shown = keyed.map((k) => k[1]);
  // What is selected is what is shown: an action never reaches a torrent a filter hides.
  if (selected.size) {
    const visible = new Set(shown.map((t) => t.id));
    for (const id of selected) if (!visible.has(id)) selected.delete(id);
  }
  cursor = Math.min(cursor, Math.max(0, shown.length - 1));
  dirty = false;
}

function updateLabels() {
  const all = new Set();
  for (const t of torrents.values()) for (const l of t.labels) all.add(l);
  const list = [...all].sort();
  const joined = list.join("\n");
  if (joined === labelsKnown) return;
  labelsKnown = joined;
  const select = $("label-filter");
  const current = select.value;
  select.replaceChildren(el("option", "", "All"));
  select.firstChild.value = "";
  for (const l of list) {
    const o = el("option", "", l);
    o.value = l;
    select.append(o);
  }
  select.value = list.includes(current) ? current : "";
}

// ---- rendering ---------------------------------------------------------------------------------

function makeHead() {
  const head = $("head");
  for (const c of COLUMNS) {
    const cell = el("span", `c-${c.id}`);
    cell.setAttribute("role", "columnheader");
    const b = el("button", "sort", c.title);
    b.type = "button";
    b.dataset.column = c.id;
    b.addEventListener("click", () => {
      sort = { column: c.id, descending: sort.column === c.id ? !sort.descending : false };
      dirty = true;
      render();
    });
    cell.append(b);
    head.append(cell);
  }
}

function updateHead() {
  for (const cell of $("head").children) {
    const b = cell.querySelector("button.sort");
    if (!b) continue;
    const on = b.dataset.column === sort.column;
    cell.setAttribute("aria-sort", on ? (sort.descending ? "descending" : "ascending") : "none");
    b.dataset.arrow = on ? (sort.descending ? "▼" : "▲") : "";
  }
}

function makeRow() {
  const row = el("div", "row");
  row.setAttribute("role", "row");
  const check = el("span", "c-check");
  check.setAttribute("role", "gridcell");
  const box = el("input");
  box.type = "checkbox";
  box.tabIndex = -1;
  check.append(box);
  row.append(check);
  row.cells = {};
  for (const c of COLUMNS) {
    const cell = el("span", `c-${c.id}`);
    cell.setAttribute("role", "gridcell");
    if (c.id === "progress") {
      const bar = el("span", "meter");
      const fill = el("span", "fill");
      const text = el("span", "pct");
      bar.append(fill);
      cell.append(bar, text);
      row.fill = fill;
      row.cells[c.id] = text;
    } else {
      row.cells[c.id] = cell;
    }
    row.append(cell);
  }
  row.box = box;
  row.seen = {};
  return row;
}

function setText(row, key, node, text) {
  if (row.seen[key] !== text) {
    row.seen[key] = text;
    node.textContent = text;
  }
}

function fillRow(row, t, index) {
  row.dataset.id = t.id;
  row.dataset.index = index;
  for (const c of COLUMNS) setText(row, c.id, row.cells[c.id], c.text(t));
  const p = Math.max(0, Math.min(1, progress(t)));
  const width = `${p * 100}%`;
  if (row.seen.width !== width) {
    row.seen.width = width;
    row.fill.style.width = width;
  }
  const cls = `row s-${stateClass(t)}${selected.has(t.id) ? " selected" : ""}${index === cursor ? " cursor" : ""}`;
  if (row.className !== cls) row.className = cls;
  row.setAttribute("aria-selected", selected.has(t.id) ? "true" : "false");
  row.box.checked = selected.has(t.id);
  row.box.setAttribute("aria-label", `Select ${t.name}`);
  row.title = t.error ? t.errorString : "";
}

function render() {
  if (dirty) refilter();
  updateHead();
  const viewport = $("viewport");
  const rows = $("rows");
  if (!rowHeight) {
    const probe = makeRow();
    rows.append(probe);
    rowHeight = probe.getBoundingClientRect().height || 32;
    probe.remove();
  }
  $("spacer").style.height = `${shown.length * rowHeight}px`;
  const first = Math.max(0, Math.floor(viewport.scrollTop / rowHeight) - 5);
  const count = Math.min(shown.length - first, Math.ceil(viewport.clientHeight / rowHeight) + 10);
  while (rows.children.length < count) rows.append(makeRow());
  while (rows.children.length > Math.max(0, count)) rows.lastChild.remove();
  rows.style.transform = `translateY(${first * rowHeight}px)`;
  for (let i = 0; i < count; i++) fillRow(rows.children[i], shown[first + i], first + i);
  $("empty").hidden = shown.length > 0;
  $("empty").textContent = torrents.size ? "No torrent matches." : "No torrents. Add one with “Add…” or drop a .torrent file here.";
  renderChrome();
}

function renderChrome() {
  for (const id of selected) if (!torrents.has(id)) selected.delete(id);
  const n = selected.size;
  $("selection").textContent = n ? `${n} selected` : "None selected";
  for (const b of ["start", "stop", "verify", "limits", "remove"]) $(b).disabled = n === 0;
  $("details").disabled = n !== 1;
  const all = $("select-all");
  all.checked = shown.length > 0 && shown.every((t) => selected.has(t.id));
  all.indeterminate = !all.checked && shown.some((t) => selected.has(t.id));
  let down = 0, up = 0;
  for (const t of torrents.values()) { down += t.rateDownload; up += t.rateUpload; }
  $("totals").textContent = `${plural(torrents.size, "torrent")} · ↓ ${rate(down) || "0 B/s"} · ↑ ${rate(up) || "0 B/s"}`;
}

let frame = 0;
function schedule() {
  if (!frame) frame = requestAnimationFrame(() => { frame = 0; render(); });
}

// ---- the update stream ---------------------------------------------------------------------------
//
// One response that stays open (POST /transmission/stream, see crates/rpc/src/stream.rs): a line
// of JSON whenever something changed, saying only that: the rows of torrents changed or added,
// the figures of moving torrents that differ from what it sent before, the ids removed. Where
// the daemon cannot hold one more (many tabs open), the page polls instead (`poll`).

let mode = "stream"; // or "poll"
// For tests and tools: the stream's last lines, [when (performance.now()), length], and the
// empty lines that only said the stream is alive.
window.bitswarmUpdates = { lines: [], keepalives: 0 };

// Rows of a torrent-get table (`keys`, then the rows) into `torrents`, each a torrent whole.
function putRows(keys, rows) {
  for (const row of rows) {
    const t = {};
    keys.forEach((k, i) => { t[k] = row[i]; });
    torrents.set(t.id, t);
  }
}

// The field names the stream sent (once) for its rows and for its moving figures.
let streamKeys = [], streamMovingKeys = [];
function apply(u) {
  if (u.full) torrents.clear();
  if (u.keys) streamKeys = u.keys;
  putRows(streamKeys, u.torrents || []);
  if (u.movingKeys) streamMovingKeys = u.movingKeys;
  for (const m of u.moving || []) {
    const t = torrents.get(m[0]);
    if (t) for (let i = 1; i + 1 < m.length; i += 2) t[streamMovingKeys[m[i]]] = m[i + 1];
  }
  for (const id of u.removed || []) torrents.delete(id);
  dirty = true;
  updateLabels();
  schedule();
  if (chooseLater.size) checkChooseLater();
}

// Reads the stream until it ends; `first` is called once its first line is in. Resolves to
// "unavailable" (the daemon will not stream to us: poll) or "lost" (open it again).
async function readStream(first) {
  const abort = new AbortController();
  const body = JSON.stringify({
    method: "torrent-get",
    arguments: { fields: FIELDS, format: "table", "bitswarm-moving": MOVING_FIELDS },
  });
  let r;
  try {
    r = await post(STREAM, body, abort.signal);
  } catch (e) {
    showError("error", "Could not refresh the list: the daemon does not answer");
    return "lost";
  }
  if (!r.ok || !r.body) return [404, 405].includes(r.status) ? "unavailable" : "lost";
  // The daemon sends a line at least every 25 s: silence for longer is a lost connection.
  let timer = 0;
  const watch = () => { clearTimeout(timer); timer = setTimeout(() => abort.abort(), STALE_MS); };
  watch();
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      watch();
      buf += value;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const seen = window.bitswarmUpdates;
        if (!line) { seen.keepalives++; continue; }
        const u = JSON.parse(line);
        if (u.poll) return "unavailable"; // the daemon holds as many as it will for us
        seen.lines.push([performance.now(), line.length]);
        if (seen.lines.length > 100) seen.lines.shift();
        document.body.dataset.updates = "stream";
        apply(u);
        showError("error", "");
        first();
      }
    }
  } catch (e) {
    // Aborted by the watch, the connection dropped, or a line that did not parse: open again.
  } finally {
    clearTimeout(timer);
  }
  return "lost";
}

// Follows the stream for as long as the page is open; resolves once the list is in.
function follow() {
  return new Promise((loaded) => {
    (async () => {
      for (let lost = 0; ; lost++) {
        if ((await readStream(loaded)) === "unavailable") {
          mode = "poll";
          document.body.dataset.updates = "poll";
          await poll();
          loaded();
          return;
        }
        loaded(); // the first try failed: the page shows why, and keeps trying
        // A daemon restarting ends the stream: open it again at once, then every 2 s.
        if (lost) await new Promise((r) => setTimeout(r, POLL_MS));
      }
    })();
  });
}

// ---- polling (where the daemon does not stream) -----------------------------------------------

let lastPoll = 0;
let pollTimer = 0;
let polling = false; // one request at a time: a poll asked for meanwhile runs after it
let pollAgain = false;
// The daemon's clock at the last answer (`bitswarm-now`): a poll asks only for what changed
// since (`bitswarm-since`), so a bulk add comes once, not in every poll for a minute.
let since = 0;

async function poll() {
  if (mode !== "poll") return; // the stream brings every change by itself
  clearTimeout(pollTimer);
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  const full = Date.now() - lastPoll > STALE_MS;
  const started = Date.now();
  let quick = false;
  try {
    // "table": the field names once, then a row of values per torrent (less than half the bytes).
    const args = { fields: FIELDS, format: "table", "bitswarm-since": full ? 0 : since };
    if (!full) {
      args.ids = "recently-active";
      args["bitswarm-wait"] = WAIT_S;
      args["bitswarm-moving"] = MOVING_FIELDS;
    }
    const reply = await rpc("torrent-get", args);
    since = reply["bitswarm-now"] || 0;
    const [keys, ...rows] = reply.torrents || [];
    if (full) torrents.clear();
    // Removed first: the daemon reads the rows after `removed`, so they are the newer truth.
    for (const id of reply.removed || []) torrents.delete(id);
    putRows(keys, rows);
    // Torrents whose figures alone moved: those fields only.
    const [movingKeys, ...moving] = reply["bitswarm-moving"] || [];
    for (const row of moving) {
      const t = torrents.get(row[0]);
      if (!t) { lastPoll = 0; continue; } // not known here: get all next time
      movingKeys.forEach((k, i) => { t[k] = row[i]; });
    }
    // Answered at once with nothing: not held (the daemon holds few per client).
    quick = !full && !rows.length && !moving.length && Date.now() - started < 250;
    if (full || rows.length || moving.length || (reply.removed || []).length) {
      dirty = true;
      updateLabels();
      schedule();
    }
    if (chooseLater.size) checkChooseLater();
    if (lastPoll || full) lastPoll = Date.now();
    showError("error", "");
  } catch (e) {
    showError("error", `Could not refresh the list: ${e.message}`);
    quick = true;
  }
  polling = false;
  if (pollAgain) {
    pollAgain = false;
    poll();
  } else {
    // Held polls follow one another; after an error or an answer not held, a pause.
    pollTimer = setTimeout(poll, quick ? (document.hidden ? POLL_MS * 5 : POLL_MS) : 0);
  }
}

// ---- selection and keyboard --------------------------------------------------------------------

function rowIndex(target) {
  const row = target.closest(".row[data-index]");
  return row ? Number(row.dataset.index) : -1;
}

function selectRange(from, to) {
  const [a, b] = from < to ? [from, to] : [to, from];
  for (let i = a; i <= b; i++) selected.add(shown[i].id);
}

function onRowClick(e) {
  const i = rowIndex(e.target);
  if (i < 0 || !shown[i]) return;
  const id = shown[i].id;
  if (e.target.type === "checkbox" || e.ctrlKey || e.metaKey) {
    if (selected.has(id)) selected.delete(id); else selected.add(id);
    anchor = id;
  } else if (e.shiftKey && anchor !== null) {
    const from = shown.findIndex((t) => t.id === anchor);
    selected.clear();
    selectRange(from < 0 ? i : from, i);
  } else {
    selected.clear();
    selected.add(id);
    anchor = id;
  }
  cursor = i;
  schedule();
}

function moveCursor(to, extend) {
  if (!shown.length) return;
  cursor = Math.max(0, Math.min(shown.length - 1, to));
  if (extend) selected.add(shown[cursor].id);
  const viewport = $("viewport");
  const top = cursor * rowHeight;
  if (top < viewport.scrollTop) viewport.scrollTop = top;
  else if (top + rowHeight > viewport.scrollTop + viewport.clientHeight) viewport.scrollTop = top + rowHeight - viewport.clientHeight;
  schedule();
}

function onListKey(e) {
  const page = Math.max(1, Math.floor($("viewport").clientHeight / (rowHeight || 32)) - 1);
  switch (e.key) {
    case "ArrowDown": moveCursor(cursor + 1, e.shiftKey); break;
    case "ArrowUp": moveCursor(cursor - 1, e.shiftKey); break;
    case "PageDown": moveCursor(cursor + page, e.shiftKey); break;
    case "PageUp": moveCursor(cursor - page, e.shiftKey); break;
    case "Home": moveCursor(0, e.shiftKey); break;
    case "End": moveCursor(shown.length - 1, e.shiftKey); break;
    case " ": {
      const t = shown[cursor];
      if (t) { if (selected.has(t.id)) selected.delete(t.id); else selected.add(t.id); anchor = t.id; }
      schedule();
      break;
    }
    case "a":
      if (!(e.ctrlKey || e.metaKey)) return;
      for (const t of shown) selected.add(t.id);
      schedule();
      break;
    case "Escape": selected.clear(); schedule(); break;
    case "Delete": if (selected.size) openRemove(); break;
    case "Enter": {
      const t = shown[cursor];
      if (!t) return;
      selected.clear();
      selected.add(t.id);
      anchor = t.id;
      openDetails();
      break;
    }
    default: return;
  }
  e.preventDefault();
}

function onGlobalKey(e) {
  if (document.querySelector("dialog[open]")) return;
  const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName);
  if (e.key === "/" && !typing) { e.preventDefault(); $("search").focus(); }
  else if (e.key === "a" && !typing && !e.ctrlKey && !e.metaKey && e.target.id !== "viewport") { e.preventDefault(); openAdd(); }
  else if (e.key === "Escape" && e.target.id === "search") { $("search").value = ""; dirty = true; schedule(); }
}

// ---- actions -----------------------------------------------------------------------------------

function ids() {
  return [...selected];
}

async function act(method, args = {}) {
  try {
    showError("action-error", "");
    await rpc(method, { ids: ids(), ...args });
  } catch (e) {
    const what = { "torrent-start": "Not started", "torrent-stop": "Not stopped", "torrent-verify": "Not verified" }[method];
    showError("action-error", `${what || method}: ${e.message}`);
  }
  setTimeout(poll, 200);
}

function plural(n, what) {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}

function describeSelection() {
  const list = ids();
  if (list.length === 1) return `“${torrents.get(list[0])?.name ?? ""}”`;
  return plural(list.length, "torrent");
}

function openRemove() {
  $("remove-what").textContent = `Remove ${describeSelection()} from the list?`;
  $("remove-data").checked = false;
  showError("remove-error", "");
  $("remove-dialog").showModal();
  $("remove-cancel").focus();
}

async function confirmRemove(e) {
  e.preventDefault();
  const deleteData = $("remove-data").checked;
  try {
    await rpc("torrent-remove", { ids: ids(), "delete-local-data": deleteData });
    for (const id of ids()) torrents.delete(id);
    selected.clear();
    dirty = true;
    schedule();
    $("remove-dialog").close();
  } catch (err) {
    showError("remove-error", `Not removed: ${err.message}`);
  }
  setTimeout(poll, 200);
}

function openLimits() {
  const first = torrents.get(ids()[0]);
  if (!first) return;
  $("limits-what").textContent = `For ${describeSelection()}.`;
  $("limit-down-on").checked = !!first.downloadLimited;
  $("limit-down").value = first.downloadLimit;
  $("limit-up-on").checked = !!first.uploadLimited;
  $("limit-up").value = first.uploadLimit;
  showError("limits-error", "");
  $("limits-dialog").showModal();
}

async function confirmLimits(e) {
  e.preventDefault();
  const down = Number($("limit-down").value);
  const up = Number($("limit-up").value);
  if (!(down >= 0) || !(up >= 0) || !Number.isInteger(down) || !Number.isInteger(up)) {
    showError("limits-error", "Limits are whole numbers of kB/s.");
    return;
  }
  try {
    await rpc("torrent-set", {
      ids: ids(),
      downloadLimited: $("limit-down-on").checked, downloadLimit: down,
      uploadLimited: $("limit-up-on").checked, uploadLimit: up,
    });
    $("limits-dialog").close();
  } catch (err) {
    showError("limits-error", `Not set: ${err.message}`);
  }
  setTimeout(poll, 200);
}

// ---- one torrent's details ----------------------------------------------------------------------

const DETAIL_FIELDS = [
  "id", "name", "hashString", "downloadDir", "totalSize", "sizeWhenDone", "haveValid", "percentDone",
  "downloadedEver", "uploadedEver", "corruptEver", "uploadRatio", "pieceCount", "pieceSize", "addedDate",
  "doneDate", "dateCreated", "comment", "creator", "isPrivate", "error", "errorString", "status",
  "files", "fileStats", "trackerStats", "peers", "pieces", "rateDownload", "rateUpload",
  "seedRatioLimit", "seedRatioMode", "seedIdleLimit", "seedIdleMode",
];
const GRAPH_SAMPLES = 60; // one per refresh (2 s): two minutes
let graph = [];
const PRIORITIES = [[1, "High"], [0, "Normal"], [-1, "Low"]];
let detailsId = null;
let detailsTimer = 0;

function date(seconds) {
  return seconds > 0 ? new Date(seconds * 1000).toLocaleString() : "";
}

function openDetails() {
  const id = ids()[0];
  if (id === undefined) return;
  detailsId = id;
  graph = [];
  fileTree = null;
  $("details-title").textContent = torrents.get(id)?.name || "";
  for (const t of ["files", "trackers", "peers"]) $(`details-${t}`).tBodies[0].replaceChildren();
  $("details-general").replaceChildren();
  showError("details-error", "");
  $("details-dialog").showModal();
  refreshDetails();
}

function closeDetails() {
  detailsId = null;
  clearTimeout(detailsTimer);
}

async function refreshDetails() {
  clearTimeout(detailsTimer);
  const id = detailsId;
  if (id === null) return;
  try {
    const reply = await rpc("torrent-get", { ids: [id], fields: DETAIL_FIELDS });
    if (detailsId !== id) return;
    const t = (reply.torrents || [])[0];
    if (!t) {
      showError("details-error", "This torrent was removed.");
      return;
    }
    showError("details-error", "");
    renderDetails(t);
  } catch (e) {
    showError("details-error", `Could not read the details: ${e.message}`);
  }
  if (detailsId === id) detailsTimer = setTimeout(refreshDetails, POLL_MS);
}

function cells(tr, values) {
  // values: [text, className?]; reuses the row's cells.
  while (tr.cells.length > values.length) tr.lastChild.remove();
  values.forEach(([text, cls], i) => {
    let td = tr.cells[i];
    if (!td) { td = el("td"); tr.append(td); }
    if (cls !== undefined && td.className !== cls) td.className = cls;
    if (td.textContent !== text) td.textContent = text;
  });
}

function sizeRows(tbody, n) {
  while (tbody.rows.length > n) tbody.lastChild.remove();
  while (tbody.rows.length < n) tbody.append(el("tr"));
}

function renderDetails(t) {
  $("details-title").textContent = t.name;
  renderSeeding(t);
  const facts = [
    ["State", stateText(t)],
    ["Have", `${size(t.haveValid)} of ${size(t.sizeWhenDone)} (${Math.floor(t.percentDone * 1000) / 10}%)`],
    ["Size", `${size(t.totalSize)} in ${plural(t.files.length, "file")}, ${t.pieceCount} pieces of ${size(t.pieceSize)}`],
    ["Downloaded", size(t.downloadedEver) + (t.corruptEver ? ` (${size(t.corruptEver)} corrupt)` : "")],
    ["Uploaded", `${size(t.uploadedEver)} (ratio ${ratio(t.uploadRatio) || "0.00"})`],
    ["Folder", t.downloadDir],
    ["Info-hash", t.hashString],
    ["Added", date(t.addedDate)],
    ["Completed", date(t.doneDate)],
    ["Created", [date(t.dateCreated), t.creator].filter(Boolean).join(" by ")],
    ["Comment", t.comment],
    ["Private", t.isPrivate ? "yes" : "no"],
  ];
  const dl = $("details-general");
  if (dl.children.length !== facts.length * 2) {
    dl.replaceChildren(...facts.flatMap(([k]) => [el("dt", "", k), el("dd")]));
  }
  facts.forEach(([, v], i) => {
    const dd = dl.children[i * 2 + 1];
    if (dd.textContent !== v) dd.textContent = v;
  });

  drawPieces(t);
  graph.push([t.rateDownload, t.rateUpload]);
  if (graph.length > GRAPH_SAMPLES) graph.shift();
  drawGraph();

  renderFiles(t);

  const trackers = $("details-trackers").tBodies[0];
  sizeRows(trackers, t.trackerStats.length);
  t.trackerStats.forEach((tr, i) => {
    const count = (n) => (n >= 0 ? String(n) : "");
    const last = tr.lastAnnounceTime > 0 ? `${tr.lastAnnounceResult} (${date(tr.lastAnnounceTime)})` : tr.lastAnnounceResult;
    cells(trackers.rows[i], [[tr.announce, "path"], [last || ""], [count(tr.seederCount), "num"], [count(tr.leecherCount), "num"]]);
  });

  const peers = $("details-peers").tBodies[0];
  sizeRows(peers, t.peers.length);
  t.peers.forEach((p, i) => {
    cells(peers.rows[i], [
      [`${p.address}:${p.port}`], [p.clientName], [`${Math.floor(p.progress * 1000) / 10}%`, "num"],
      [rate(p.rateToClient), "num"], [rate(p.rateToPeer), "num"], [p.flagStr], [p.from || ""],
    ]);
  });
}

// The files as a tree: a folder's row sums its files and (un)wants them all at once. Built
// once per torrent shown (the layout of a torrent's files does not change), updated in place.
let fileTree = null; // { id, count, entries: [{ files: [index], folder, tr, box, prio }] }

function buildFileTree(t) {
  const tbody = $("details-files").tBodies[0];
  tbody.replaceChildren();
  const order = t.files.map((_, i) => i).sort((a, b) => (t.files[a].name < t.files[b].name ? -1 : 1));
  const entries = [];
  const open = []; // the folders the current file is in: [{ path, entry }]
  for (const i of order) {
    const parts = t.files[i].name.split("/");
    let depth = 0;
    while (depth < open.length && depth < parts.length - 1 && open[depth].path === parts.slice(0, depth + 1).join("/")) depth++;
    open.length = depth;
    for (; depth < parts.length - 1; depth++) {
      const entry = addFileRow(tbody, entries, `${parts[depth]}/`, depth, true);
      open.push({ path: parts.slice(0, depth + 1).join("/"), entry });
    }
    for (const o of open) o.entry.files.push(i);
    addFileRow(tbody, entries, parts[parts.length - 1], depth, false).files.push(i);
  }
  fileTree = { id: t.id, count: t.files.length, entries };
}

function addFileRow(tbody, entries, name, depth, folder) {
  const entry = { files: [], folder };
  const tr = el("tr", folder ? "folder" : "");
  const box = el("input");
  box.type = "checkbox";
  box.setAttribute("aria-label", `Download ${name}`);
  box.addEventListener("change", () => setFiles({ [box.checked ? "files-wanted" : "files-unwanted"]: entry.files }));
  const c0 = el("td");
  c0.append(box);
  const c1 = el("td", "path", name);
  c1.style.paddingLeft = `${0.5 + depth * 1.25}rem`;
  const c4 = el("td");
  if (!folder) {
    const prio = el("select");
    prio.setAttribute("aria-label", `Priority of ${name}`);
    for (const [v, label] of PRIORITIES) { const o = el("option", "", label); o.value = v; prio.append(o); }
    prio.addEventListener("change", () => {
      const key = { 1: "priority-high", 0: "priority-normal", "-1": "priority-low" }[prio.value];
      setFiles({ [key]: entry.files });
    });
    c4.append(prio);
    entry.prio = prio;
  }
  tr.append(c0, c1, el("td", "num"), el("td", "num"), c4);
  tbody.append(tr);
  Object.assign(entry, { tr, box });
  entries.push(entry);
  return entry;
}

function renderFiles(t) {
  if (!fileTree || fileTree.id !== t.id || fileTree.count !== t.files.length) buildFileTree(t);
  for (const e of fileTree.entries) {
    let length = 0, done = 0, wanted = 0;
    for (const i of e.files) {
      length += t.files[i].length;
      done += t.files[i].bytesCompleted;
      if (t.fileStats[i].wanted) wanted++;
    }
    e.box.checked = wanted === e.files.length;
    e.box.indeterminate = wanted > 0 && wanted < e.files.length;
    if (e.prio && document.activeElement !== e.prio) e.prio.value = String(t.fileStats[e.files[0]].priority);
    const texts = [size(length), length ? `${Math.floor((done / length) * 1000) / 10}%` : "100%"];
    texts.forEach((text, j) => { if (e.tr.cells[j + 2].textContent !== text) e.tr.cells[j + 2].textContent = text; });
  }
}

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// The pieces it has, as a bar: each pixel column as dark as the share of its pieces present.
function drawPieces(t) {
  const canvas = $("details-pieces");
  const ctx = canvas.getContext("2d");
  const bits = atob(t.pieces || "");
  const n = t.pieceCount;
  const has = (i) => (bits.charCodeAt(i >> 3) >> (7 - (i & 7))) & 1;
  let count = 0;
  for (let i = 0; i < n; i++) count += has(i);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = cssColor("--down");
  const w = canvas.width;
  for (let x = 0; x < w && n > 0; x++) {
    const from = Math.floor((x * n) / w);
    const to = Math.max(from + 1, Math.floor(((x + 1) * n) / w));
    let got = 0;
    for (let i = from; i < to; i++) got += has(i);
    if (got) {
      ctx.globalAlpha = got / (to - from);
      ctx.fillRect(x, 0, 1, canvas.height);
    }
  }
  ctx.globalAlpha = 1;
  canvas.dataset.have = count;
  canvas.setAttribute("aria-label", `${count} of ${n} pieces`);
}

// Download and upload rates over the last samples, scaled to the largest.
function drawGraph() {
  const canvas = $("details-graph");
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  const top = Math.max(1, ...graph.flat());
  for (const [k, color] of [[0, "--down"], [1, "--ok"]]) {
    ctx.strokeStyle = cssColor(color);
    ctx.lineWidth = 2;
    ctx.beginPath();
    graph.forEach((s, i) => {
      const x = w - (graph.length - 1 - i) * (w / (GRAPH_SAMPLES - 1));
      const y = h - 2 - (s[k] / top) * (h - 4);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
  const [down, up] = graph[graph.length - 1] || [0, 0];
  canvas.setAttribute("aria-label", `now ↓ ${rate(down) || "0 B/s"}, ↑ ${rate(up) || "0 B/s"}; top ${rate(top)}`);
}

async function setFiles(args) {
  try {
    await rpc("torrent-set", { ids: [detailsId], ...args });
    showError("details-error", "");
  } catch (e) {
    showError("details-error", `Not changed: ${e.message}`);
  }
  refreshDetails();
}

// ---- the daemon's settings (session-set) -----------------------------------------------------

// [legend, [[key, label, type]]]; type: text, bool, int (≥ 0), ratio (≥ 0), port (0 to 65535),
// time (minutes after midnight, shown as HH:MM), days (Transmission's mask), or a list of choices.
const SETTINGS = [
  ["Downloads", [
    ["download-dir", "Folder for new torrents", "text"],
    ["start-added-torrents", "Start torrents when added", "bool"],
  ]],
  ["Speed", [
    ["speed-limit-down-enabled", "Limit the download speed", "bool"],
    ["speed-limit-down", "Download limit (kB/s)", "int"],
    ["speed-limit-up-enabled", "Limit the upload speed", "bool"],
    ["speed-limit-up", "Upload limit (kB/s)", "int"],
  ]],
  ["Seeding", [
    ["seedRatioLimited", "Stop seeding at a ratio", "bool"],
    ["seedRatioLimit", "Ratio", "ratio"],
    ["idle-seeding-limit-enabled", "Stop seeding when idle", "bool"],
    ["idle-seeding-limit", "Idle minutes", "int"],
  ]],
  ["Queue", [
    ["download-queue-enabled", "Limit the torrents downloading at once", "bool"],
    ["download-queue-size", "Downloading at once", "int"],
    ["seed-queue-enabled", "Limit the torrents seeding at once", "bool"],
    ["seed-queue-size", "Seeding at once", "int"],
  ]],
  ["Alternative speed", [
    ["alt-speed-enabled", "Use the alternative limits (they replace the ones above)", "bool"],
    ["alt-speed-down", "Alternative download limit (kB/s)", "int"],
    ["alt-speed-up", "Alternative upload limit (kB/s)", "int"],
    ["alt-speed-time-enabled", "Turn them on and off on a schedule", "bool"],
    ["alt-speed-time-begin", "On at (local time)", "time"],
    ["alt-speed-time-end", "Off at (the next day when earlier)", "time"],
    ["alt-speed-time-day", "On these days", "days"],
  ]],
  ["Watch folder", [
    ["watch-dir-enabled", "Add the .torrent files put in a folder", "bool"],
    ["watch-dir", "Watch folder", "text"],
  ]],
  ["Peers", [
    ["peer-port", "Port peers connect to (0: any free one)", "port"],
    ["peer-limit-global", "Peers in all", "int"],
    ["peer-limit-per-torrent", "Peers per torrent", "int"],
    ["encryption", "Encryption", [["required", "Required"], ["preferred", "Preferred"], ["tolerated", "Tolerated"]]],
    ["pex-enabled", "Peer exchange (PEX)", "bool"],
    ["dht-enabled", "DHT", "bool"],
    ["lpd-enabled", "Local peer discovery (LSD)", "bool"],
  ]],
];
// Transmission's day masks: Sunday 1, Monday 2 … Saturday 64.
const DAY_MASKS = [[127, "Every day"], [62, "Weekdays"], [65, "Weekends"], [1, "Sundays"], [2, "Mondays"],
  [4, "Tuesdays"], [8, "Wednesdays"], [16, "Thursdays"], [32, "Fridays"], [64, "Saturdays"]];
let settingsLoaded = {};

const hhmm = (m) => `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;

function settingInput(key) {
  return $(`setting-${key}`);
}

function makeSettings() {
  const box = $("settings-fields");
  for (const [legend, fields] of SETTINGS) {
    const set = el("fieldset");
    set.append(el("legend", "", legend));
    for (const [key, label, type] of fields) {
      let input;
      if (type === "bool") {
        input = el("input");
        input.type = "checkbox";
        const l = el("label", "check");
        l.append(input, ` ${label}`);
        set.append(l);
      } else {
        const l = el("label", "", label);
        const choices = type === "days" ? DAY_MASKS : type;
        if (Array.isArray(choices)) {
          input = el("select");
          for (const [v, text] of choices) { const o = el("option", "", text); o.value = v; input.append(o); }
        } else {
          input = el("input");
          input.type = type === "text" || type === "time" ? type : "number";
          if (type === "int") { input.min = "0"; input.step = "1"; }
          if (type === "port") { input.min = "0"; input.max = "65535"; input.step = "1"; }
          if (type === "ratio") { input.min = "0"; input.step = "0.1"; }
        }
        l.htmlFor = `setting-${key}`;
        set.append(l, input);
      }
      input.id = `setting-${key}`;
    }
    box.append(set);
  }
}

function readSetting(key, type) {
  const input = settingInput(key);
  if (type === "bool") return input.checked;
  if (type === "int" || type === "ratio" || type === "port" || type === "days") return Number(input.value);
  if (type === "time") {
    const m = /^(\d\d):(\d\d)/.exec(input.value);
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  }
  return input.value;
}

async function openSettings() {
  showError("settings-error", "");
  const keys = SETTINGS.flatMap(([, f]) => f.map(([k]) => k));
  try {
    settingsLoaded = await rpc("session-get", { fields: keys });
  } catch (e) {
    showError("error", `Could not read the settings: ${e.message}`);
    return;
  }
  for (const [, fields] of SETTINGS) {
    for (const [key, , type] of fields) {
      const input = settingInput(key);
      const v = settingsLoaded[key];
      if (type === "bool") input.checked = !!v;
      else if (type === "time") input.value = Number.isInteger(v) ? hhmm(v) : "";
      else if (type === "days") {
        // A mask the list does not name (set by another client) is shown as it is.
        if (![...input.options].some((o) => Number(o.value) === v)) {
          const o = el("option", "", `Days of mask ${v}`);
          o.value = v;
          input.append(o);
        }
        input.value = v;
      } else input.value = v ?? "";
    }
  }
  $("settings-dialog").showModal();
}

async function saveSettings(e) {
  e.preventDefault();
  const changed = {};
  for (const [, fields] of SETTINGS) {
    for (const [key, label, type] of fields) {
      const v = readSetting(key, type);
      const wrong =
        type === "int" && !(Number.isInteger(v) && v >= 0) ? "a number of at least 0"
        : type === "ratio" && !(v >= 0) ? "a number of at least 0"
        : type === "port" && !(Number.isInteger(v) && v >= 0 && v <= 65535) ? "a port from 0 to 65535"
        : type === "time" && Number.isNaN(v) ? "a time of day (HH:MM)"
        : null;
      if (wrong) {
        showError("settings-error", `${label}: ${wrong}, please.`);
        settingInput(key).focus();
        return;
      }
      if (v !== settingsLoaded[key]) changed[key] = v;
    }
  }
  try {
    if (Object.keys(changed).length) await rpc("session-set", changed);
    if ("download-dir" in changed) defaultDir = changed["download-dir"];
    $("settings-dialog").close();
  } catch (err) {
    showError("settings-error", `Not saved: ${err.message}`);
    // The daemon names the key it refused (a port in use…): the field to change gets the focus.
    const key = Object.keys(changed).find((k) => err.message.startsWith(`${k} `));
    if (key) settingInput(key).focus();
  }
}

// ---- adding ------------------------------------------------------------------------------------

let defaultDir = "";
let dropped = [];

async function openAdd(files) {
  dropped = files ? [...files] : [];
  $("add-files").value = "";
  $("add-url").value = "";
  $("add-dir").value = defaultDir;
  $("add-labels").value = "";
  $("add-paused").checked = false;
  $("add-choose-later").checked = false;
  showError("add-error", "");
  addChoices = new Map();
  readChoices();
  $("drop").dataset.dropped = dropped.length ? `${plural(dropped.length, "file")} dropped: ${dropped.map((f) => f.name).join(", ")}` : "";
  $("add-dialog").showModal();
  (dropped.length ? $("add-ok") : $("add-files")).focus();
}

function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(new Error(`${file.name}: could not be read`));
    reader.readAsDataURL(file);
  });
}

async function confirmAdd(e) {
  e.preventDefault();
  const files = [...dropped, ...$("add-files").files];
  const links = $("add-url").value.split(/\s+/).map((s) => s.trim()).filter(Boolean);
  if (!files.length && !links.length) {
    showError("add-error", "Choose a .torrent file or paste a magnet link or URL.");
    return;
  }
  const common = { paused: $("add-paused").checked };
  const dir = $("add-dir").value.trim();
  if (dir) common["download-dir"] = dir;
  const labels = $("add-labels").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (labels.length) common.labels = labels;
  const failures = [];
  const later = $("add-choose-later").checked;
  const jobs = [
    ...files.map((f) => async () => [f.name, await rpc("torrent-add", { ...common, ...choiceArgs(f), metainfo: await base64(f) })]),
    ...links.map((l) => async () => {
      // Chosen later: the daemon fetches the metadata, then stops before any data.
      const magnet = /^magnet:/i.test(l);
      const reply = await rpc("torrent-add", { ...common, ...(later && magnet ? { "bitswarm-stop-at-metadata": true } : {}), filename: l });
      const added = reply["torrent-added"];
      if (later && added && magnet) chooseLater.add(added.id);
      return [l, reply];
    }),
  ];
  $("add-ok").disabled = true;
  for (const job of jobs) {
    try {
      await job();
    } catch (err) {
      failures.push(err.message);
    }
  }
  $("add-ok").disabled = false;
  setTimeout(poll, 100);
  if (failures.length) {
    showError("add-error", `Not added: ${failures.join("; ")}`);
    return;
  }
  $("add-dialog").close();
}

function onDrop(e) {
  const files = [...(e.dataTransfer?.files || [])];
  if (!files.length) return;
  e.preventDefault();
  document.body.classList.remove("dragging");
  if ($("add-dialog").open) {
    dropped.push(...files);
    $("drop").dataset.dropped = `${plural(dropped.length, "file")} dropped: ${dropped.map((f) => f.name).join(", ")}`;
    readChoices();
  } else {
    openAdd(files);
  }
}

// ---- making a torrent on the daemon's machine (bitswarm-torrent-create) -------------------------

let trackerInfo = null; // bitswarm-tracker-get's last answer, when the daemon runs a tracker
let createJob = 0;
let createTimer = 0;

function openCreate() {
  clearTimeout(createTimer);
  createJob = 0;
  $("create-path").value = defaultDir ? `${defaultDir.replace(/\/$/, "")}/` : "";
  $("create-trackers").value = trackerInfo?.announceUrls?.[0] || "";
  $("create-piece").value = "0";
  $("create-private").checked = false;
  $("create-comment").value = "";
  $("create-source").value = "";
  $("create-progress-box").hidden = true;
  $("create-result").hidden = true;
  $("create-copied").textContent = "";
  $("create-ok").disabled = false;
  showError("create-error", "");
  $("create-dialog").showModal();
  $("create-path").focus();
}

function closeCreate() {
  clearTimeout(createTimer);
  createJob = 0;
  $("create-dialog").close();
}

async function confirmCreate(e) {
  e.preventDefault();
  showError("create-error", "");
  $("create-result").hidden = true;
  const path = $("create-path").value.trim();
  if (!path) {
    showError("create-error", "Name the file or folder to make the torrent of.");
    return;
  }
  $("create-ok").disabled = true;
  try {
    const reply = await rpc("bitswarm-torrent-create", {
      path,
      trackers: $("create-trackers").value,
      "piece-size": Number($("create-piece").value),
      private: $("create-private").checked,
      comment: $("create-comment").value,
      source: $("create-source").value,
    });
    createJob = reply.job.job;
    showCreateJob(reply.job);
    createTimer = setTimeout(followCreate, 250);
  } catch (err) {
    $("create-ok").disabled = false;
    showError("create-error", `Not made: ${err.message}`);
  }
}

async function followCreate() {
  const job = createJob;
  if (!job) return;
  try {
    const reply = await rpc("bitswarm-torrent-create-status", { job });
    if (job !== createJob) return;
    const j = (reply.jobs || [])[0];
    if (!j) throw new RpcError("the job is gone");
    showCreateJob(j);
    if (j.status === "hashing") createTimer = setTimeout(followCreate, 300);
  } catch (err) {
    showError("create-error", `Could not follow the hashing: ${err.message}`);
    $("create-ok").disabled = false;
  }
}

function showCreateJob(j) {
  const box = $("create-progress-box");
  box.hidden = false;
  $("create-progress").value = j.percentDone;
  box.dataset.status = j.status;
  if (j.status === "hashing") {
    $("create-progress-text").textContent = `Hashing “${j.name}”: ${size(j.hashed)} of ${size(j.total)}`;
  } else if (j.status === "done") {
    $("create-progress-text").textContent = `“${j.name}” made, and seeding (${size(j.total)}).`;
    $("create-magnet").value = j.magnetLink;
    $("create-result").hidden = false;
    $("create-ok").disabled = false;
    $("create-copy").focus();
    setTimeout(poll, 100);
  } else {
    $("create-progress-text").textContent = "";
    box.hidden = true;
    showError("create-error", `Not made: ${j.errorString}`);
    $("create-ok").disabled = false;
  }
}

async function copyMagnet() {
  const text = $("create-magnet").value;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Without the clipboard API (an insecure origin): the old way, from the selected field.
    $("create-magnet").select();
    if (!document.execCommand("copy")) {
      $("create-copied").textContent = "Could not copy: select the link and copy it.";
      return;
    }
  }
  $("create-copied").textContent = "Copied.";
}

// ---- the tracker this daemon runs (bitswarm-tracker-get) ----------------------------------------

let trackerTimer = 0;
let trackerLast = null; // [time, announces] of the previous answer, for announces per second

async function loadTracker() {
  try {
    trackerInfo = await rpc("bitswarm-tracker-get");
  } catch {
    trackerInfo = null;
  }
  $("tracker-toggle").hidden = !trackerInfo?.enabled;
}

function toggleTracker() {
  const panel = $("tracker-panel");
  panel.hidden = !panel.hidden;
  $("tracker-toggle").setAttribute("aria-pressed", String(!panel.hidden));
  clearTimeout(trackerTimer);
  trackerLast = null;
  if (!panel.hidden) refreshTracker();
}

async function refreshTracker() {
  clearTimeout(trackerTimer);
  if ($("tracker-panel").hidden) return;
  try {
    const t = await rpc("bitswarm-tracker-get");
    trackerInfo = t;
    showError("tracker-error", "");
    renderTracker(t);
  } catch (e) {
    showError("tracker-error", `Could not read the tracker: ${e.message}`);
  }
  trackerTimer = setTimeout(refreshTracker, document.hidden ? POLL_MS * 5 : POLL_MS);
}

function renderTracker(t) {
  const now = performance.now();
  let perSecond = "";
  if (trackerLast && now > trackerLast[0]) {
    perSecond = ((t.announces - trackerLast[1]) / ((now - trackerLast[0]) / 1000)).toFixed(1);
  }
  trackerLast = [now, t.announces];
  const parts = [
    plural(t.swarms, "swarm"), plural(t.seeders, "seeder"), plural(t.leechers, "leecher"), `${t.completed} completed`,
    `${t.announces} announces${perSecond ? ` (${perSecond}/s)` : ""}`, (t.announceUrls || []).join(" "),
  ];
  $("tracker-summary").textContent = parts.join(" · ");
  const tbody = $("tracker-swarms").tBodies[0];
  const list = t.swarmList || [];
  sizeRows(tbody, list.length);
  list.forEach((s, i) => {
    const tr = tbody.rows[i];
    tr.dataset.hash = s.hashString;
    cells(tr, [
      [s.name || s.hashString, "path"], [String(s.seeders), "num"], [String(s.leechers), "num"],
      [String(s.completed), "num"], [s.idleSeconds < 5 ? "just now" : `${eta(s.idleSeconds)} ago`, "num"],
    ]);
    tr.title = s.hashString;
  });
}

// ---- choosing the files before a torrent starts --------------------------------------------------

// A bencode reader for the .torrent files picked to add: enough to list their files. Strings
// stay bytes (a torrent's names are UTF-8 by convention; shown as decoded, with U+FFFD where
// they are not). Bad input throws; depth and size are bounded by the file's.
function bdecode(bytes) {
  let i = 0;
  const fail = (what) => { throw new Error(`not a torrent (${what} at byte ${i})`); };
  const int = (end) => {
    const text = new TextDecoder().decode(bytes.subarray(i, end));
    if (!/^-?\d+$/.test(text)) fail("a bad number");
    i = end + 1;
    return Number(text);
  };
  const value = (depth) => {
    if (depth > 64) fail("nesting too deep");
    const c = bytes[i];
    if (c === 0x69) { // i…e
      i++;
      const end = bytes.indexOf(0x65, i);
      if (end < 0) fail("an unterminated number");
      return int(end);
    }
    if (c === 0x6c || c === 0x64) { // l…e, d…e
      i++;
      const list = [];
      while (bytes[i] !== 0x65) {
        if (i >= bytes.length) fail("an unterminated list");
        list.push(value(depth + 1));
      }
      i++;
      if (c === 0x6c) return list;
      const dict = new Map();
      for (let k = 0; k + 1 < list.length; k += 2) dict.set(new TextDecoder().decode(list[k]), list[k + 1]);
      return dict;
    }
    if (c >= 0x30 && c <= 0x39) {
      const colon = bytes.indexOf(0x3a, i);
      if (colon < 0) fail("a string without a length");
      const n = int(colon) ;
      i = colon + 1;
      if (i + n > bytes.length) fail("a string past the end");
      const s = bytes.subarray(i, i + n);
      i += n;
      return s;
    }
    return fail("an unknown value");
  };
  return value(0);
}

const utf8 = (b) => new TextDecoder().decode(b);

// The files of a .torrent, in its order (padding files included and flagged: torrent-add's
// indices, as torrent-get's, leave them out), or null when it does not parse.
export function torrentFiles(bytes) {
  try {
    const top = bdecode(bytes);
    const info = top.get("info");
    const name = utf8(info.get("name.utf-8") || info.get("name"));
    const files = info.get("files");
    if (!files) return { name, files: [{ path: name, length: info.get("length"), padding: false }] };
    return {
      name,
      files: files.map((f) => {
        const parts = (f.get("path.utf-8") || f.get("path")).map(utf8);
        const attr = f.get("attr");
        return { path: [name, ...parts].join("/"), length: f.get("length"), padding: !!attr && utf8(attr).includes("p") };
      }),
    };
  } catch {
    return null;
  }
}

const MAX_CHOOSABLE = 5000; // more files than this are chosen in the details, after adding
let addChoices = new Map(); // File -> { files, wanted: boolean[] } of the torrents picked

async function readChoices() {
  const files = [...dropped, ...$("add-files").files];
  const next = new Map();
  for (const f of files) {
    const old = addChoices.get(f);
    if (old) { next.set(f, old); continue; }
    const t = torrentFiles(new Uint8Array(await f.arrayBuffer()));
    if (t && t.files.length <= MAX_CHOOSABLE) next.set(f, { ...t, wanted: t.files.map(() => true) });
  }
  addChoices = next;
  renderChoices();
}

function renderChoices() {
  const tbody = $("add-file-table").tBodies[0];
  tbody.replaceChildren();
  let shownFiles = 0;
  for (const [, t] of addChoices) {
    const real = t.files.map((f, i) => [f, i]).filter(([f]) => !f.padding);
    if (real.length < 2) continue; // one file: nothing to choose
    shownFiles += real.length;
    const folders = new Map(); // "a/b/" -> its file indices
    for (const [f, i] of real) {
      const parts = f.path.split("/");
      for (let d = 1; d < parts.length; d++) {
        const key = `${parts.slice(0, d).join("/")}/`;
        if (!folders.has(key)) folders.set(key, []);
        folders.get(key).push(i);
      }
    }
    const rows = [...folders.keys()].map((k) => [k, true]).concat(real.map(([f, i]) => [f.path, false, i]));
    rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [path, folder, index] of rows) {
      const depth = path.split("/").length - (folder ? 2 : 1);
      const tr = el("tr", folder ? "folder" : "");
      const box = el("input");
      box.type = "checkbox";
      const label = folder ? path.split("/").slice(-2, -1)[0] + "/" : path.split("/").pop();
      box.setAttribute("aria-label", `Download ${label}`);
      box.dataset.path = path;
      const members = folder ? folders.get(path) : [index];
      box.addEventListener("change", () => {
        for (const i of members) t.wanted[i] = box.checked;
        updateChoiceBoxes();
      });
      box.members = members;
      box.torrent = t;
      const c0 = el("td");
      c0.append(box);
      const c1 = el("td", "path", label);
      c1.style.paddingLeft = `${0.5 + depth * 1.25}rem`;
      const length = members.reduce((n, i) => n + t.files[i].length, 0);
      tr.append(c0, c1, el("td", "num", size(length)));
      tbody.append(tr);
    }
  }
  $("add-choose").hidden = shownFiles === 0;
  $("add-choose-note").textContent = shownFiles ? "Unticked files are never downloaded (change it later in the details)." : "";
  updateChoiceBoxes();
}

function updateChoiceBoxes() {
  for (const box of $("add-file-table").querySelectorAll("input[type=checkbox]")) {
    const n = box.members.filter((i) => box.torrent.wanted[i]).length;
    box.checked = n === box.members.length;
    box.indeterminate = n > 0 && n < box.members.length;
  }
}

// torrent-add's arguments for the files of `file` left unticked.
function choiceArgs(file) {
  const t = addChoices.get(file);
  if (!t) return {};
  // Indices as torrent-get's files count them: padding files left out.
  const unwanted = [];
  let k = 0;
  t.files.forEach((f, i) => {
    if (f.padding) return;
    if (!t.wanted[i]) unwanted.push(k);
    k += 1;
  });
  return unwanted.length ? { "files-unwanted": unwanted } : {};
}

// Magnet links added to have their files chosen: the daemon stops each once its metadata came
// (bitswarm-stop-at-metadata), and its details open then, to untick files and start it.
const chooseLater = new Set();

function checkChooseLater() {
  for (const id of chooseLater) {
    const t = torrents.get(id);
    if (!t) { chooseLater.delete(id); continue; }
    if (t.metadataPercentComplete >= 1 && t.status === 0 && !document.querySelector("dialog[open]")) {
      chooseLater.delete(id);
      selected.clear();
      selected.add(id);
      openDetails();
      $("details-choose").hidden = false;
      schedule();
      return;
    }
  }
}

// ---- one torrent's seeding limits (torrent-set) ----------------------------------------------------

let seedingShownFor = null; // the torrent whose limits the controls show (not overwritten while edited)

function renderSeeding(t) {
  if (seedingShownFor === t.id) return;
  seedingShownFor = t.id;
  $("seed-ratio-mode").value = String(t.seedRatioMode);
  $("seed-ratio-limit").value = t.seedRatioLimit;
  $("seed-idle-mode").value = String(t.seedIdleMode);
  $("seed-idle-limit").value = t.seedIdleLimit;
  $("details-start").hidden = t.status !== 0;
}

async function applySeeding() {
  const ratio = Number($("seed-ratio-limit").value);
  const idle = Number($("seed-idle-limit").value);
  if (!(ratio >= 0) || !(Number.isInteger(idle) && idle >= 0)) {
    showError("details-error", "A ratio of at least 0, and whole minutes, please.");
    return;
  }
  try {
    await rpc("torrent-set", {
      ids: [detailsId],
      seedRatioMode: Number($("seed-ratio-mode").value), seedRatioLimit: ratio,
      seedIdleMode: Number($("seed-idle-mode").value), seedIdleLimit: idle,
    });
    showError("details-error", "");
    seedingShownFor = null;
  } catch (e) {
    showError("details-error", `Not set: ${e.message}`);
  }
  refreshDetails();
}

async function startFromDetails() {
  try {
    await rpc("torrent-start", { ids: [detailsId] });
    $("details-start").hidden = true;
    $("details-choose").hidden = true;
  } catch (e) {
    showError("details-error", `Not started: ${e.message}`);
  }
  setTimeout(poll, 200);
}

function wireMore() {
  $("create").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", confirmCreate);
  $("create-cancel").addEventListener("click", closeCreate);
  $("create-dialog").addEventListener("close", () => { clearTimeout(createTimer); createJob = 0; });
  $("create-copy").addEventListener("click", copyMagnet);
  $("tracker-toggle").addEventListener("click", toggleTracker);
  $("add-files").addEventListener("change", readChoices);
  $("seed-apply").addEventListener("click", applySeeding);
  $("details-start").addEventListener("click", startFromDetails);
  $("details-dialog").addEventListener("close", () => { seedingShownFor = null; $("details-choose").hidden = true; });
}

// ---- start -------------------------------------------------------------------------------------

function wire() {
  makeHead();
  makeSettings();
  $("settings").addEventListener("click", openSettings);
  $("settings-form").addEventListener("submit", saveSettings);
  $("settings-cancel").addEventListener("click", () => $("settings-dialog").close());
  $("viewport").tabIndex = 0;
  $("viewport").setAttribute("aria-label", "Torrents: arrows move, space selects");
  $("viewport").addEventListener("scroll", schedule, { passive: true });
  $("viewport").addEventListener("keydown", onListKey);
  $("rows").addEventListener("click", onRowClick);
  window.addEventListener("resize", () => { rowHeight = 0; schedule(); });
  document.addEventListener("keydown", onGlobalKey);
  const refilterSoon = () => { dirty = true; schedule(); };
  $("search").addEventListener("input", refilterSoon);
  for (const id of ["state-filter", "label-filter"]) {
    $(id).addEventListener("input", refilterSoon);
    $(id).addEventListener("change", refilterSoon);
  }
  $("select-all").addEventListener("change", (e) => {
    if (e.target.checked) for (const t of shown) selected.add(t.id);
    else for (const t of shown) selected.delete(t.id);
    schedule();
  });
  $("start").addEventListener("click", () => act("torrent-start"));
  $("stop").addEventListener("click", () => act("torrent-stop"));
  $("verify").addEventListener("click", () => act("torrent-verify"));
  $("remove").addEventListener("click", openRemove);
  $("limits").addEventListener("click", openLimits);
  $("details").addEventListener("click", openDetails);
  $("details-dialog").addEventListener("close", closeDetails);
  $("rows").addEventListener("dblclick", (e) => { if (rowIndex(e.target) >= 0 && selected.size === 1) openDetails(); });
  $("add").addEventListener("click", () => openAdd());
  $("add-form").addEventListener("submit", confirmAdd);
  $("add-cancel").addEventListener("click", () => $("add-dialog").close());
  $("remove-dialog").querySelector("form").addEventListener("submit", confirmRemove);
  $("remove-cancel").addEventListener("click", () => $("remove-dialog").close());
  $("limits-dialog").querySelector("form").addEventListener("submit", confirmLimits);
  $("limits-cancel").addEventListener("click", () => $("limits-dialog").close());
  document.addEventListener("dragover", (e) => {
    if (e.dataTransfer?.types.includes("Files")) { e.preventDefault(); document.body.classList.add("dragging"); }
  });
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("dragging"); });
  document.addEventListener("drop", onDrop);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  wireMore();
}

async function main() {
  wire();
  render();
  try {
    await learnSessionId();
    const s = await rpc("session-get", { fields: ["download-dir", "version"] });
    defaultDir = s["download-dir"] || "";
    document.title = "bitswarm";
    await loadTracker();
  } catch (e) {
    showError("error", `Could not reach the daemon: ${e.message}`);
  }
  await follow();
  document.body.dataset.ready = "true";
}

main();
