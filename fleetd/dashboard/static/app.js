// fleet dashboard: the view is pushed by the server (server-sent events), never polled.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const view = { units: new Map(), states: new Map(), machines: [], unplaced: new Map(),
               use: new Map(), rollouts: [], reachable: null, error: "" };
let selected = null;   // name of the unit shown in detail
let journal = null;    // { source, name, machine }
const $ = (id) => document.getElementById(id);

function q(path, params = {}) {
  const p = new URLSearchParams({ ...params, token });
  return `${path}?${p}`;
}

function api(path, options = {}) {
  return fetch(path, { ...options, headers: { "X-Dashboard-Token": token } });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

const short = (id) => (id ? id.slice(0, 8) + "…" : "");
function machineLabel(id) {
  const m = view.machines.find((x) => x.id === id);
  return m ? `${short(id)}/${m.primaryIP || ""}` : short(id);
}

// --- the model ---------------------------------------------------------------------------------
function setSnapshot(data) {
  view.units = new Map(data.units.map((u) => [u.name, u]));
  view.states = new Map();
  for (const s of data.states) {
    if (!view.states.has(s.name)) view.states.set(s.name, []);
    view.states.get(s.name).push(s);
  }
  view.machines = data.machines;
  view.unplaced = new Map(Object.entries(data.unplaced || {}));
  view.use = new Map(Object.entries(data.use || {}));
  view.rollouts = data.rollouts || [];
}

function applyUnits(data) {
  for (const entry of data.units) {
    if (entry.unit) view.units.set(entry.name, entry.unit);
    else view.units.delete(entry.name);
    if (entry.states && entry.states.length) view.states.set(entry.name, entry.states);
    else view.states.delete(entry.name);
  }
}

function isGlobal(u) { return !("currentState" in u); }
// wants a machine and has none: fleetd says why (the hub's `unplaced` events)
function isUnplaced(u) { return !isGlobal(u) && !u.machineID && u.desiredState !== "inactive"; }

// one row per unit: the placed machine's systemd state (or every machine's, for global units)
function rowOf(u) {
  const states = view.states.get(u.name) || [];
  let target = "-", active = "-", sub = "-", machines = [], unplaced = false;
  if (isUnplaced(u)) {
    unplaced = true;
    const reason = view.unplaced.get(u.name);
    target = reason ? `not placed: ${reason}` : "not placed";
  } else if (isGlobal(u)) {
    target = "global";
    machines = states.map((s) => s.machineID);
    const summary = (key) => [...new Set(states.map((s) => s[key]))].join(", ") || "-";
    active = summary("systemdActiveState");
    sub = summary("systemdSubState");
  } else if (u.machineID) {
    target = machineLabel(u.machineID);
    machines = [u.machineID];
    const s = states.find((x) => x.machineID === u.machineID);
    if (s) { active = s.systemdActiveState; sub = s.systemdSubState; }
  }
  return { name: u.name, dstate: u.desiredState, state: u.currentState || "-", target,
           active, sub, hash: (u.hash || "").slice(0, 7), machines, unplaced };
}

// --- rendering ---------------------------------------------------------------------------------
function render() {
  renderRollouts();
  renderMachines();
  renderUnits();
  renderDetail();
}

// sizes and CPUs as fleetctl shows them: 1.5G, 512M, 0; 1.5
const SIZES = [["T", 2 ** 40], ["G", 2 ** 30], ["M", 2 ** 20], ["K", 2 ** 10]];
function showSize(n) {
  if (!n) return "0";
  for (const [suffix, unit] of SIZES) {
    if (n >= unit) return (n / unit).toFixed(1).replace(/\.0$/, "") + suffix;
  }
  return `${Math.trunc(n)}B`;
}
const showCpus = (n) => String(Math.round(n * 1000) / 1000);

// a machine's use (the hub's `use` events, fleetd's x/machines): a bar per resource it says it
// offers, reserved of capacity; in the warning colour when its units reserve more than that
function useBars(id) {
  const use = view.use.get(id);
  const bars = [];
  for (const [dim, label, show] of [["cpus", "CPU", showCpus], ["memory", "Memory", showSize]]) {
    const a = use && use[dim];
    if (!a || a.capacity === null || a.capacity === undefined) continue;
    const over = a.reserved > a.capacity + 1e-9;
    const text = `${label} ${show(a.reserved)}/${show(a.capacity)}${over ? " over-committed" : ""}`;
    const fill = el("span", { class: "fill" });
    const share = a.capacity > 0 ? a.reserved / a.capacity : (a.reserved > 0 ? 1 : 0);
    fill.style.width = `${Math.min(100, 100 * share)}%`;  // CSSOM: allowed by the page's CSP
    bars.push(el("div", { class: over ? "use over" : "use", "data-dim": dim },
      el("span", { class: "use-label", text }),
      el("div", { class: "bar", role: "meter", "aria-label": `${label} reserved`,
                  "aria-valuemin": "0", "aria-valuemax": String(Math.max(a.capacity, a.reserved)),
                  "aria-valuenow": String(a.reserved), "aria-valuetext": text }, fill)));
  }
  return bars;
}

// rollouts not over (the hub's `rollouts` events, fleetd's x/rollouts): one row each, with a bar
// of its instances updated (or reverted) out of all
function renderRollouts() {
  const body = document.querySelector("#rollouts tbody");
  body.replaceChildren();
  $("rollouts-section").hidden = view.rollouts.length === 0;
  $("rollouts-count").textContent = view.rollouts.length ? `(${view.rollouts.length})` : "";
  for (const r of view.rollouts) {
    const targets = r.targets || [];
    const counted = targets.filter((t) => t.phase !== "skipped");
    const back = r.state === "reverting";
    const done = counted.filter((t) => t.phase === (back ? "reverted" : "healthy")).length;
    const fill = el("span", { class: "fill" });
    fill.style.width = `${counted.length ? (100 * done) / counted.length : 0}%`;  // CSSOM
    const bar = el("div", { class: back || r.state === "failed" ? "use over" : "use",
                            "data-dim": "rollout" },
      el("span", { class: "use-label", text: r.progress || "" }),
      el("div", { class: "bar", role: "meter", "aria-label": `${r.name} progress`,
                  "aria-valuemin": "0", "aria-valuemax": String(counted.length),
                  "aria-valuenow": String(done), "aria-valuetext": r.progress || "" }, fill));
    body.append(el("tr", { "data-rollout": r.name },
      el("td", { "data-col": "name", text: r.name }),
      el("td", { "data-col": "action", text: r.action }),
      el("td", { "data-col": "state", text: r.state }),
      el("td", { "data-col": "progress" }, bar),
      el("td", { "data-col": "reason", class: "wrap", text: r.reason || "-" })));
  }
}

function renderMachines() {
  const body = $("machines").tBodies[0];
  const rows = view.machines.map((m) => {
    const units = [...view.units.values()].filter((u) => rowOf(u).machines.includes(m.id))
      .map((u) => u.name);
    // the operator's metadata; the facts fleetd measured (fleet.*) are in the cell's tooltip,
    // as `fleetctl list-machines` keeps them out of its METADATA column
    const pairs = Object.entries(m.metadata || {});
    const shown = (facts) => pairs.filter(([k]) => k.startsWith("fleet.") === facts)
      .map(([k, v]) => `${k}=${v}`).join(", ");
    const meta = shown(false), facts = shown(true);
    const bars = useBars(m.id), use = view.use.get(m.id);
    const tr = el("tr", { "data-machine": m.id },
      el("td", { class: "mono", title: m.id, text: short(m.id) }),
      el("td", { class: "mono", text: m.primaryIP || "" }),
      el("td", { class: "wrap", text: meta || "-", title: facts ? `measured: ${facts}` : "" }),
      el("td", { "data-col": "use" }, ...(bars.length ? bars : ["-"])),
      el("td", { class: "wrap mono", "data-col": "units", text: units.join(" ") || "-" }));
    if (bars.length && use.overcommitted) tr.classList.add("overcommitted");
    return tr;
  });
  body.replaceChildren(...rows);
  $("machines-count").textContent = `(${view.machines.length})`;
  const select = $("filter-machine"), current = select.value;
  select.replaceChildren(el("option", { value: "", text: "any" }),
    ...view.machines.map((m) => el("option", { value: m.id, text: machineLabel(m.id) })));
  select.value = view.machines.some((m) => m.id === current) ? current : "";
}

function matches(r) {
  const name = $("filter-name").value.trim().toLowerCase();
  const state = $("filter-state").value;
  const machine = $("filter-machine").value;
  if (name && !r.name.toLowerCase().includes(name)) return false;
  if (state && ![r.dstate, r.state, ...r.active.split(", ")].includes(state)) return false;
  if (machine && !r.machines.includes(machine)) return false;
  return true;
}

const LABELS = { dstate: "DSTATE", state: "STATE", target: "TARGET", active: "ACTIVE",
                 sub: "SUB", hash: "HASH" };
function cell(col, text, cls = "") {
  const c = el("td", { "data-col": col, "data-label": LABELS[col], text });
  c.className = [cls, ...text.split(", ").map((t) => `s-${t}`)].join(" ").trim();
  return c;
}

function renderUnits() {
  const body = $("units").tBodies[0];
  const all = [...view.units.values()].sort((a, b) => a.name.localeCompare(b.name)).map(rowOf);
  const shown = all.filter(matches);
  body.replaceChildren(...shown.map((r) => {
    const open = el("button", { type: "button", class: "link", text: r.name,
                                "aria-label": `Show details of ${r.name}`,
                                onclick: () => select(r.name) });
    const tr = el("tr", { "data-unit": r.name },
      el("th", { scope: "row" }, open),
      cell("dstate", r.dstate), cell("state", r.state),
      r.unplaced ? el("td", { "data-col": "target", "data-label": LABELS.target, class: "wrap reason",
                              text: r.target })
        : cell("target", r.target, "mono"),
      cell("active", r.active), cell("sub", r.sub), cell("hash", r.hash, "mono"));
    if (r.name === selected) tr.classList.add("selected");
    return tr;
  }));
  $("units-count").textContent = shown.length === all.length ? `(${all.length})`
    : `(${shown.length} of ${all.length})`;
  $("units-empty").hidden = shown.length > 0;
  $("units-empty").textContent = all.length ? "No unit matches the filters." : "No units.";
}

function unitFileText(u) {
  let out = "", section = null;
  for (const o of u.options || []) {
    if (o.section !== section) {
      out += `${section === null ? "" : "\n"}[${o.section}]\n`;
      section = o.section;
    }
    out += `${o.name}=${o.value}\n`;
  }
  return out;
}

function renderDetail() {
  const box = $("detail");
  if (!selected) { box.hidden = true; return; }
  box.hidden = false;
  const u = view.units.get(selected);
  $("detail-title").textContent = selected;
  if (!u) {
    $("detail-summary").textContent = "This unit no longer exists.";
    for (const b of box.querySelectorAll("[data-action]")) b.disabled = true;
    stopJournal();
    return;
  }
  for (const b of box.querySelectorAll("[data-action]")) b.disabled = false;
  const r = rowOf(u);
  $("detail-summary").textContent =
    `desired ${r.dstate}, current ${r.state}, ${r.unplaced ? "" : "on "}${r.target}; `
    + `systemd ${r.active}/${r.sub}`;
  $("unit-file").textContent = unitFileText(u);
  // the journal of the machine running it (global units: the machine picked in the list)
  const running = (view.states.get(selected) || []).filter((s) => s.systemdActiveState !== "inactive"
    || s.systemdSubState !== "dead").map((s) => s.machineID);
  const label = $("journal-machine-label"), pick = $("journal-machine");
  label.hidden = !isGlobal(u);
  if (isGlobal(u)) {
    const current = pick.value;
    pick.replaceChildren(...r.machines.map((m) => el("option", { value: m, text: machineLabel(m) })));
    if (r.machines.includes(current)) pick.value = current;
  }
  const machine = isGlobal(u) ? pick.value : (u.machineID || "");
  if (running.length && machine && (!isGlobal(u) || running.includes(machine))) {
    startJournal(selected, machine);
  } else if (!journal || journal.name !== selected) {
    stopJournal();
    $("journal").textContent = "(not running: no journal to follow)";
  }
}

// --- unit detail -------------------------------------------------------------------------------
function select(name) {
  if (selected !== name) {
    stopJournal();
    $("journal").textContent = "";
    $("unit-status").textContent = "";
    $("action-result").textContent = "";
  }
  selected = name;
  render();
  refreshStatus();
  $("detail-title").focus();
}

let statusAsked = 0;
async function refreshStatus() {
  if (!selected) return;
  const name = selected, asked = ++statusAsked;
  const resp = await api(`api/units/${encodeURIComponent(name)}/status`).catch(() => null);
  if (selected !== name || asked !== statusAsked) return;  // a later answer is coming
  const text = resp ? await resp.text() : "(the dashboard server is unreachable)";
  $("unit-status").textContent = text.trim() && text !== "null" ? text
    : "(fleetd gave no status text: press Refresh to ask again)";
}

function startJournal(name, machine) {
  if (journal && journal.name === name && journal.machine === machine) return;
  stopJournal();
  const pre = $("journal");
  pre.textContent = "";
  const params = machine ? { machineID: machine } : {};
  const source = new EventSource(q(`api/units/${encodeURIComponent(name)}/journal`, params));
  journal = { source, name, machine };
  source.addEventListener("line", (e) => {
    pre.append(e.data + "\n");
    while (pre.childNodes.length > 300) pre.firstChild.remove();
    pre.scrollTop = pre.scrollHeight;
  });
  const end = (e) => {
    pre.append(e.data ? `(${e.data})\n` : "(the journal stream ended)\n");
    source.close();
    // ended: the next state change pushed for this unit opens it again (see renderDetail)
    if (journal && journal.source === source) journal = null;
  };
  source.addEventListener("failed", end);
  source.addEventListener("end", end);
}

function stopJournal() {
  if (journal) journal.source.close();
  journal = null;
}

async function act(action) {
  const name = selected;
  if (!name) return;
  if (action === "destroy") {
    const dialog = $("confirm");
    $("confirm-text").textContent = `Destroy ${name}? It is stopped and removed from the cluster.`;
    dialog.returnValue = "";
    dialog.showModal();
    await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
    if (dialog.returnValue !== "destroy") return;
  }
  const result = $("action-result");
  result.textContent = `${action}: sent…`;
  try {
    const resp = await api(`api/units/${encodeURIComponent(name)}/${action}`, { method: "POST" });
    const body = await resp.json().catch(() => ({}));
    result.textContent = resp.ok ? `${action}: requested`
      : `${action} failed: ${(body.error && body.error.message) || resp.status}`;
  } catch (err) {
    result.textContent = `${action} failed: the dashboard server is unreachable`;
  }
}

// --- connection --------------------------------------------------------------------------------
function showStatus() {
  const banner = $("banner"), conn = $("conn");
  if (view.reachable === false) {
    banner.hidden = false;
    banner.textContent = `fleetd is unreachable: ${view.error || "no answer"}. `
      + "The view below may be out of date; it recovers by itself when fleetd is back.";
    conn.textContent = "fleetd unreachable";
    conn.className = "pill down";
  } else if (view.reachable === "lost") {
    banner.hidden = false;
    banner.textContent = "The dashboard server is unreachable (did `fleetctl dashboard` stop?). "
      + "Retrying…";
    conn.textContent = "dashboard offline";
    conn.className = "pill down";
  } else if (view.reachable === true) {
    banner.hidden = true;
    banner.textContent = "";
    conn.textContent = "live";
    conn.className = "pill up";
  }
  document.body.dataset.reachable = String(view.reachable);
}

function connect() {
  const source = new EventSource(q("events"));
  source.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    view.reachable = s.reachable === null ? null : s.reachable;
    view.error = s.error;
    showStatus();
  });
  source.addEventListener("snapshot", (e) => {
    setSnapshot(JSON.parse(e.data));
    render();
    if (selected) refreshStatus();
  });
  source.addEventListener("units", (e) => {
    const data = JSON.parse(e.data);
    applyUnits(data);
    render();
    if (selected && data.units.some((x) => x.name === selected)) refreshStatus();
  });
  source.addEventListener("unplaced", (e) => {
    view.unplaced = new Map(Object.entries(JSON.parse(e.data).units));
    render();
  });
  source.addEventListener("rollouts", (e) => {
    view.rollouts = JSON.parse(e.data).rollouts;
    renderRollouts();
  });
  source.addEventListener("use", (e) => {
    view.use = new Map(Object.entries(JSON.parse(e.data).machines));
    renderMachines();
  });
  source.addEventListener("machines", (e) => {
    view.machines = JSON.parse(e.data).machines;
    render();
  });
  source.onerror = () => {
    if (source.readyState !== EventSource.OPEN) { view.reachable = "lost"; showStatus(); }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["filter-name", "filter-state", "filter-machine"]) {
    $(id).addEventListener("input", renderUnits);
  }
  for (const b of document.querySelectorAll("[data-action]")) {
    b.addEventListener("click", () => act(b.dataset.action));
  }
  $("detail-close").addEventListener("click", () => {
    stopJournal();
    selected = null;
    render();
    $("units-title").focus();
  });
  $("status-refresh").addEventListener("click", refreshStatus);
  $("journal-machine").addEventListener("change", renderDetail);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && selected && !$("confirm").open) $("detail-close").click();
  });
  api("api/info").then((r) => r.json()).then((info) => { $("endpoint").textContent = info.endpoint; })
    .catch(() => {});
  connect();
});
