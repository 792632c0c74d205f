// The dashboard: hash-routed pages over the JSON API, refreshed by polling while they are shown.
"use strict";

(function () {
  const KEY = "fleet-key"; // sessionStorage: shared with the API docs pages, gone with the tab
  const FLEET_EVERY = 1000, PAGE_EVERY = 2000; // ms between refreshes: the issue asks for <= 2 s
  const RATE_WINDOW = 5; // seconds of fleet snapshots a rate is taken over
  const HISTORY = 180; // fleet snapshots kept for the rate charts (3 minutes at one a second)
  const { lineChart, fmt } = window.FleetCharts;

  // ---- small DOM helpers: text goes in as text, never as HTML ----
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    put(node, children);
    return node;
  }
  // Appends children (nested arrays flattened; null, undefined and false skipped).
  function put(node, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  // A refresh replaces a page's content, but never under the user's hand: while a pointer is pressed
  // the new content waits (a click whose button is swapped between press and release is lost), and
  // the focused control and the open <details> with a data-key are found again in the new content.
  const HOLD_LIMIT = 5000; // ms: a press whose release never came stops holding refreshes back
  let pressedAt = 0;
  const waiting = new Map(); // node -> the children it waits to show
  document.addEventListener("pointerdown", () => { pressedAt = performance.now(); }, true);
  for (const type of ["pointerup", "pointercancel"]) {
    document.addEventListener(type, () => {
      pressedAt = 0;
      setTimeout(() => { for (const [node, children] of waiting) swap(node, children); waiting.clear(); }, 0); // after the click
    }, true);
  }
  function fill(node, ...children) {
    if (pressedAt && performance.now() - pressedAt < HOLD_LIMIT) waiting.set(node, children);
    else { waiting.delete(node); swap(node, children); }
    return node;
  }
  function swap(node, children) {
    const focused = node.contains(document.activeElement) ? document.activeElement.closest("[data-key]")?.dataset.key : undefined;
    const open = [...node.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key);
    node.replaceChildren();
    put(node, children);
    const keyed = (key) => node.querySelector(`[data-key="${CSS.escape(key)}"]`);
    for (const key of open) keyed(key)?.setAttribute("open", "");
    const again = focused && keyed(focused);
    if (again) (again.tagName === "DETAILS" ? again.querySelector("summary") : again).focus({ preventScroll: true });
  }
  const num = (v, digits) => (v === null || v === undefined || !Number.isFinite(v) ? "—"
    : digits === undefined ? v.toLocaleString("en-US") : v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }));
  const pct = (v) => (v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%");
  function bytes(v) {
    if (v === null || v === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i ? v.toFixed(1) : v) + " " + units[i];
  }
  function age(iso) {
    if (!iso) return "none";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
    return `${(s / 86400).toFixed(1)} d ago`;
  }
  const ms = (seconds) => (seconds === null || !Number.isFinite(seconds) ? "—" : (1000 * seconds).toFixed(1) + " ms");
  const card = (label, value, id) => h("div", { class: "card" }, h("div", { class: "label" }, label),
    h("div", { class: "value", "data-figure": id }, value));
  function table(caption, headers, rows, attrs) {
    return h("div", { class: "table-wrap" }, h("table", attrs || {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label || c)))),
      h("tbody", {}, rows)));
  }
  const td = (value, isNum) => h("td", { class: isNum ? "num" : null }, value);
  const stateCell = (state) => h("td", { class: `state-${state}` }, state);

  // ---- the API ----
  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }
  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.authorization = "Bearer " + key;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!response.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(response.status, err.code || "http_" + response.status, err.message || `${method} ${path}: ${response.status}`);
    }
    return data;
  }
  const get = (path) => api("GET", path);

  // ---- the key, the banner, the clock in the footer ----
  let whoami = null;
  async function refreshKey() {
    const state = document.getElementById("key-state");
    try {
      whoami = await get("/v1/whoami");
      state.textContent = whoami.role === "admin" ? "admin" : `devices '${whoami.prefix}*'`;
    } catch (e) {
      whoami = null;
      state.textContent = e.status === 401 ? "a key is needed" : e.message;
    }
  }
  // What an action said stays until the next action or page; what a refresh said, until a refresh works.
  function banner(message, ok, fromRefresh) {
    const node = document.getElementById("banner");
    node.hidden = !message;
    node.textContent = message || "";
    node.className = ok ? "ok" : "";
    node.dataset.from = fromRefresh ? "refresh" : "action";
  }
  function shown(error) {
    if (error.status === 401) return "This needs an API key: type it in above (it stays in this tab only).";
    return error.message;
  }
  function updated() { document.getElementById("updated").textContent = new Date().toLocaleTimeString(); }

  // ---- routing and live refresh ----
  let current = null; // {name, refresh, every, timer, alive}
  function parseHash() {
    const [path, query] = (location.hash.replace(/^#/, "") || "/fleet").split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { parts, query: new URLSearchParams(query || "") };
  }
  function go() {
    if (current) { current.alive = false; clearTimeout(current.timer); }
    const { parts, query } = parseHash();
    const [page, id] = parts;
    const view = document.getElementById("view");
    view.replaceChildren();
    banner("");
    let made;
    if (page === "devices" && id) made = devicePage(view, id);
    else if (page === "devices") made = devicesPage(view, query);
    else if (page === "rounds" && id) made = roundPage(view, id);
    else if (page === "rounds") made = roundsPage(view);
    else made = fleetPage(view);
    const name = page === "devices" || page === "rounds" ? page : "fleet";
    for (const link of document.querySelectorAll("nav a[data-page]")) {
      if (link.dataset.page === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    current = { ...made, alive: true, timer: null, busy: false, again: false };
    tick(current);
  }
  // One refresh at a time per page: a refresh asked for during another runs once it is done.
  async function tick(page) {
    if (!page.alive) return;
    if (page.busy) { page.again = true; return; }
    page.busy = true;
    clearTimeout(page.timer);
    let stopped = false;
    try {
      await page.refresh();
      if (page.alive) {
        if (document.getElementById("banner").dataset.from === "refresh") banner("");
        updated();
      }
    } catch (e) {
      if (page.alive) banner(shown(e), false, true);
      stopped = e.status === 404 && page.stopOn404;
    } finally {
      page.busy = false;
    }
    if (!page.alive) return;
    if (page.again) { page.again = false; tick(page); }
    else if (page.every && !stopped) page.timer = setTimeout(() => tick(page), page.every);
  }
  function refreshNow() { if (current) tick(current); }
  function act(label, run, attrs) {
    return h("button", { type: "button", ...attrs, onclick: async (event) => {
      const button = event.currentTarget;
      if (attrs && attrs["data-confirm"] && !confirm(attrs["data-confirm"])) return;
      button.disabled = true;
      try {
        const message = await run();
        banner(message || `${label}: done`, true);
        refreshNow();
      } catch (e) {
        banner(`${label}: ${shown(e)}`);
      } finally {
        button.disabled = false;
      }
    } }, label);
  }

  // ---- Fleet ----
  function fleetPage(view) {
    const snapshots = []; // {time, status}
    const body = h("div", {});
    view.append(h("h1", {}, "Fleet"), body);

    // The newest snapshot and the oldest within RATE_WINDOW of it: every rate on the page is over these.
    function rateWindow() {
      const last = snapshots[snapshots.length - 1];
      return [snapshots.find((s) => s.time >= last.time - RATE_WINDOW) || last, last];
    }
    function rate(pick) {
      const [first, last] = rateWindow();
      if (first === last) return null;
      return (pick(last.status) - pick(first.status)) / (last.time - first.time);
    }
    function series(pick, label) {
      const points = [];
      for (let i = 1; i < snapshots.length; i++) {
        const [a, b] = [snapshots[i - 1], snapshots[i]];
        points.push([b.time - snapshots[snapshots.length - 1].time, (pick(b.status) - pick(a.status)) / (b.time - a.time)]);
      }
      return { name: label, points };
    }
    const totalRequests = (s) => s.requests.reduce((n, r) => n + r.requests, 0);

    function routeRows() {
      const [first, last] = rateWindow();
      const bounds = last.status.request_buckets;
      const before = new Map(first.status.requests.map((r) => [r.method + " " + r.route, r]));
      const span = last.time - first.time;
      const rows = last.status.requests.map((r) => {
        const b = before.get(r.method + " " + r.route) || { requests: 0, errors: 0, seconds: 0, buckets: r.buckets.map(() => 0) };
        const n = r.requests - b.requests;
        let p95 = null;
        if (n > 0) {
          const i = r.buckets.findIndex((c, j) => c - b.buckets[j] >= 0.95 * n);
          p95 = i < bounds.length ? "≤ " + ms(bounds[i]) : "> " + ms(bounds[bounds.length - 1]);
        }
        return { r, rate: span > 0 ? n / span : null, errors: span > 0 ? (r.errors - b.errors) / span : null,
          mean: n > 0 ? (r.seconds - b.seconds) / n : (r.requests ? r.seconds / r.requests : null), p95 };
      });
      rows.sort((x, y) => (y.rate || 0) - (x.rate || 0) || y.r.requests - x.r.requests);
      return rows.map(({ r, rate: perSecond, errors, mean, p95 }) => h("tr", {},
        td(r.method), h("td", {}, h("code", {}, r.route)), td(num(perSecond, 1), true), td(num(errors, 1), true),
        td(ms(mean), true), td(p95 || "—", true), td(num(r.requests), true)));
    }

    async function refresh() {
      const [status, shards] = await Promise.all([get("/v1/fleet"), get("/v1/fleet/shards")]);
      snapshots.push({ time: status.time, status });
      if (snapshots.length > HISTORY) snapshots.shift();
      const cap = status.max_resident === null ? "no cap" : `cap ${num(status.max_resident)}`;
      const jobs = Object.entries(status.jobs).sort();
      const span = snapshots[snapshots.length - 1].time - snapshots[0].time;
      const live = { xLabel: "seconds ago", yMin: 0, xMin: -Math.max(60, span), xMax: 0 };
      fill(body, 
        h("div", { class: "cards" },
          card("Devices", num(status.devices), "devices"),
          card(`Resident (${cap})`, num(status.resident), "resident"),
          card("Train steps / s", num(rate((s) => s.train_steps), 1), "train_steps_rate"),
          card("Train steps", num(status.train_steps), "train_steps"),
          card("Activations / s", num(rate((s) => s.activations), 1), "activations_rate"),
          card("Evictions / s", num(rate((s) => s.evictions), 1), "evictions_rate"),
          card("Spills / s", num(rate((s) => s.spills), 1), "spills_rate"),
          card("Requests / s", num(rate(totalRequests), 1), "requests_rate"),
          card("Memory (RSS)", bytes(status.process_rss_bytes), "rss"),
          card("Shards", shards.sharded ? num(shards.shards.length) : "one process", "shards")),
        h("p", { class: "muted" }, `Since start: ${num(status.activations)} activations, ${num(status.evictions)} evictions, ${num(status.spills)} spills. Rates are over the last ${RATE_WINDOW} s.`),
        h("div", { class: "grid2" },
          lineChart({ title: "Train steps per second", series: [series((s) => s.train_steps, "train steps / s")], ...live }),
          lineChart({ title: "Requests per second", series: [series(totalRequests, "requests / s")], ...live })),
        h("h2", {}, "Requests by route"),
        table(`Over the last ${RATE_WINDOW} s; p95 is the bucket bound it falls in.`,
          ["Method", "Route", { label: "Req / s", num: true }, { label: "Errors / s", num: true }, { label: "Mean", num: true },
            { label: "p95", num: true }, { label: "Total", num: true }], routeRows(), { id: "routes" }),
        h("h2", {}, "Jobs by state"),
        jobs.length ? table("Active jobs now, and ended jobs since start.", ["State", { label: "Jobs", num: true }],
          jobs.map(([state, n]) => h("tr", {}, stateCell(state), td(num(n), true))), { id: "jobs" })
          : h("p", { class: "muted" }, "No jobs since start."),
        shards.sharded ? [h("h2", {}, `Shards (epoch ${shards.epoch})`), table(null,
          ["Slot", "Address", "Node", "PID", { label: "Devices", num: true }, { label: "Resident", num: true }, "State"],
          shards.shards.map((s) => h("tr", {}, td(s.slot), td(s.address || "—"), td(s.node || "—"), td(s.pid || "—"),
            td(num(s.devices), true), td(num(s.resident), true), stateCell(s.state || "—"))), { id: "shards" })] : null);
    }
    return { refresh, every: FLEET_EVERY };
  }

  // ---- Devices ----
  function devicesPage(view, query) {
    const prefix = query.get("prefix") || "";
    const after = query.get("after") || "";
    const limit = Math.min(1000, Math.max(1, parseInt(query.get("limit") || "100", 10) || 100));
    const offset = Math.max(0, parseInt(query.get("offset") || "0", 10) || 0);
    const link = (params) => "#/devices?" + new URLSearchParams({ prefix, limit, ...params }).toString();
    const input = h("input", { id: "prefix", type: "search", value: prefix, placeholder: "ID prefix", spellcheck: "false" });
    const sizes = h("select", { id: "limit", "aria-label": "Devices per page" },
      [25, 100, 500, 1000].map((n) => h("option", { value: n, selected: n === limit }, `${n} a page`)));
    const form = h("form", { class: "toolbar", role: "search", onsubmit: (e) => {
      e.preventDefault();
      location.hash = "#/devices?" + new URLSearchParams({ prefix: input.value.trim(), limit: sizes.value }).toString();
    } }, h("label", { for: "prefix" }, "Filter"), input, sizes, h("button", { type: "submit" }, "Show"));
    const body = h("div", {});
    view.append(h("h1", {}, "Devices"), form, body);

    async function refresh() {
      const params = new URLSearchParams({ limit });
      if (prefix) params.set("prefix", prefix);
      if (after) params.set("after", after);
      const page = await get("/v1/devices?" + params.toString());
      const rows = page.devices.map((d) => h("tr", {},
        h("td", {}, h("a", { href: "#/devices/" + encodeURIComponent(d.id) }, d.id)),
        td(d.model || "—"), td(d.resident ? "yes" : "no"), td(num(d.train_steps), true),
        td(d.last_loss === null ? "—" : fmt(d.last_loss), true), td(d.has_checkpoint ? age(d.checkpoint_saved_at) : "none"),
        td((d.profile && d.profile.class) || (d.profile ? "custom" : "—")), td(d.problem || "")));
      // The API pages by cursor (next_after); the cursors of earlier pages are remembered here to go back.
      const back = offset - limit <= 0 ? "" : pageCursors.get(`${prefix}|${limit}|${offset - limit}`);
      if (page.next_after) rememberCursor(`${prefix}|${limit}|${offset + limit}`, page.next_after);
      const nav = h("div", { class: "toolbar" },
        h("span", { class: "grow", id: "page-range" }, page.devices.length
          ? `${num(offset + 1)}–${num(offset + page.devices.length)} of ${num(page.total)}` : `0 of ${num(page.total)}`),
        offset > 0 ? h("a", { href: link({}) }, "First") : null,
        offset > 0 && back !== undefined ? h("a", { href: link({ after: back, offset: Math.max(0, offset - limit) }), rel: "prev" }, "Previous") : null,
        page.next_after ? h("a", { href: link({ after: page.next_after, offset: offset + limit }), rel: "next" }, "Next") : null);
      fill(body, nav, table(null, ["ID", "Model", "Resident", { label: "Train steps", num: true },
        { label: "Last loss", num: true }, "Checkpoint", "Profile", "Problem"], rows, { id: "devices" }));
    }
    return { refresh, every: PAGE_EVERY };
  }

  const pageCursors = new Map(); // "prefix|limit|offset" -> the cursor that page starts after
  function rememberCursor(key, cursor) {
    if (pageCursors.size >= 10000) pageCursors.delete(pageCursors.keys().next().value);
    pageCursors.set(key, cursor);
  }

  // ---- Device ----
  function devicePage(view, id) {
    const base = "/v1/devices/" + encodeURIComponent(id);
    const body = h("div", {});
    view.append(h("h1", {}, "Device ", h("code", {}, id)), body);
    const actions = h("div", { class: "toolbar", id: "actions" },
      act("Train one batch", async () => {
        const job = await api("POST", base + "/jobs", { steps: 1 });
        return `Training one batch (job ${job.id}, ${job.data} data)`;
      }),
      act("Train one epoch", async () => `Training one epoch (job ${(await api("POST", base + "/jobs", {})).id})`),
      act("Save", async () => { await api("POST", base + "/save"); return "Saved its checkpoint"; }),
      act("Restore", async () => { await api("POST", base + "/restore"); return "Restored its checkpoint"; }),
      act("Restart", async () => { await api("POST", base + "/restart"); return "Restarted: unsaved weights are gone"; },
        { "data-confirm": "Restart the device? Its unsaved weights are lost." }),
      act("Reset", async () => { await api("POST", base + "/reset"); return "Reset to the baseline"; },
        { class: "danger", "data-confirm": "Reset the device to the baseline model? Its checkpoint is deleted." }));

    async function refresh() {
      const [device, history, jobs, samples, assignment] = await Promise.all([
        get(base), get(base + "/history"), get(base + "/jobs"), get(base + "/samples"),
        get(base + "/assignment").catch((e) => (e.status === 404 ? null : Promise.reject(e)))]);
      const losses = history.history;
      const bySource = {};
      for (const entry of losses) (bySource[entry.source] = bySource[entry.source] || []).push([entry.step, entry.loss]);
      const p = device.profile;
      fill(body, 
        h("div", { class: "cards" },
          card("Train steps", num(device.train_steps), "train_steps"),
          card("Last loss", device.last_loss === null ? "—" : fmt(device.last_loss), "last_loss"),
          card("Resident", device.resident ? "yes" : "no", "resident"),
          card("Checkpoint", device.has_checkpoint ? age(device.checkpoint_saved_at) : "none", "checkpoint"),
          card("Simulated clock", device.clock === null ? "—" : num(device.clock, 1) + " s", "clock")),
        actions,
        h("h2", {}, "Loss history"),
        lineChart({ title: `Training loss of ${id}`, xLabel: "step", series: Object.entries(bySource).map(([name, points]) => ({ name, points })),
          summary: losses.length ? `${num(losses.length)} steps; last loss ${fmt(losses[losses.length - 1].loss)}, lowest ${fmt(Math.min(...losses.map((e) => e.loss)))}.` : "No training steps yet." }),
        h("div", { class: "grid2" },
          h("section", { id: "record" }, h("h2", {}, "Record"), facts([
            ["Model", device.model || "—"], ["Created", device.created_at || "—"],
            ["Checkpoint", device.has_checkpoint ? `${bytes(device.checkpoint_bytes)}, saved ${device.checkpoint_saved_at}` : "none"],
            ["Unsaved weights spilled", device.has_spill ? "yes" : "no"], ["Problem", device.problem || "none"]])),
          h("section", { id: "profile" }, h("h2", {}, "Profile"), p ? facts([
            ["Class", p.class || "custom"], ["Speed", p.speed === undefined ? "—" : num(p.speed, 2) + "×"],
            ["Compute", `${p.compute.train_ms_per_sample ?? "—"} ms / training sample, ${p.compute.infer_ms_per_sample ?? "—"} ms / inference`],
            ["Network", `${p.network.uplink_mbps} Mbit/s up, ${p.network.downlink_mbps} down, RTT ${p.network.rtt_ms} ms`],
            ["Availability", p.availability.kind], ["Dropout", pct(p.dropout)]]) : h("p", { class: "muted" }, "None: an ideal phone.")),
          h("section", { id: "data" }, h("h2", {}, "Data"), facts([
            ["Samples", `${num(samples.count)} of ${num(samples.capacity)} (${bytes(samples.bytes)})`],
            ["Assigned", assignment && assignment.assignment
              ? `${assignment.assignment.dataset}: ${num(assignment.assignment.train_size)} train, ${num(assignment.assignment.test_size)} test (${assignment.assignment.scheme})`
              : "none"]]))),
        h("h2", {}, "Jobs"),
        jobs.jobs.length ? table(null, ["Job", "State", "Progress", { label: "Loss", num: true }, "Started", "Error", ""],
          jobs.jobs.slice().reverse().map((j) => h("tr", {}, td(h("code", {}, j.id)), stateCell(j.state),
            h("td", {}, h("progress", { max: Math.max(1, j.steps_total), value: j.steps_done, "aria-label": `job ${j.id} progress` }),
              ` ${num(j.steps_done)} / ${num(j.steps_total)}`),
            td(j.loss === null ? "—" : fmt(j.loss), true), td(j.started_at ? age(j.started_at) : "—"), td(j.error || ""),
            h("td", {}, j.state === "running" || j.state === "queued"
              ? act("Cancel", async () => { await api("POST", `${base}/jobs/${j.id}/cancel`); return `Cancelled job ${j.id}`; },
                { "data-key": `cancel job ${j.id}` }) : null))),
          { id: "jobs" }) : h("p", { class: "muted" }, "No jobs."));
    }
    return { refresh, every: PAGE_EVERY, stopOn404: true };
  }
  function facts(pairs) { return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])); }

  // ---- Rounds ----
  function roundsPage(view) {
    const body = h("div", {});
    view.append(h("h1", {}, "Rounds"), h("p", { class: "muted" }, "Federated round runs, from POST /v1/rounds or fleet simulate; newest first."), body);
    async function refresh() {
      const runs = (await get("/v1/rounds")).runs.slice().reverse();
      fill(body, runs.length ? table(null, ["Run", "State", "Model", "Aggregation", "Progress",
        { label: "Per round", num: true }, { label: "Devices", num: true }, "Created"],
        runs.map((r) => h("tr", {}, h("td", {}, h("a", { href: "#/rounds/" + encodeURIComponent(r.id) }, r.id)), stateCell(r.state),
          td(r.model), td(r.spec.aggregation), h("td", {}, h("progress", { max: r.progress.rounds_total, value: r.progress.rounds_done, "aria-label": `run ${r.id} progress` }),
            ` ${r.progress.rounds_done} / ${r.progress.rounds_total}`), td(num(r.spec.participants), true), td(num(r.spec.devices), true), td(age(r.created_at)))),
        { id: "runs" }) : h("p", { class: "muted" }, "No rounds yet."));
    }
    return { refresh, every: PAGE_EVERY };
  }

  function roundPage(view, id) {
    const body = h("div", {});
    view.append(h("h1", {}, "Round run ", h("code", {}, id)), body);
    async function refresh() {
      const run = await get("/v1/rounds/" + encodeURIComponent(id));
      const rounds = run.rounds;
      const point = (pick) => rounds.map((r) => [r.round, pick(r)]).filter((p) => p[1] !== null && p[1] !== undefined);
      const last = rounds[rounds.length - 1];
      const active = run.state === "running" || run.state === "queued";
      fill(body, 
        h("div", { class: "cards" },
          card("State", run.state, "state"),
          card("Rounds", `${run.progress.rounds_done} / ${run.progress.rounds_total}`, "rounds_done"),
          card("Global accuracy", last ? pct(last.global_accuracy) : "—", "global_accuracy"),
          card("Mean local accuracy", last ? pct(last.mean_local_accuracy) : "—", "local_accuracy"),
          card("Version", run.version === null ? "—" : num(run.version), "version"),
          card("Simulated time", num(run.simulated_time, 1) + " s", "simulated_time"),
          run.spec.privacy ? card(`Epsilon (delta ${run.spec.privacy.delta})`, epsilonOf(last), "epsilon") : null),
        h("div", { class: "toolbar" }, active ? act("Cancel run", async () => { await api("POST", `/v1/rounds/${encodeURIComponent(id)}/cancel`); return "Cancelled"; }, { class: "danger", "data-key": "cancel run" }) : null,
          h("span", { class: "muted" }, `${run.spec.aggregation}, ${run.spec.participants} of ${num(run.spec.devices)} devices a round, ` +
            `${run.spec.training.epochs} epoch(s) of batch ${run.spec.training.batch_size}, seed ${run.spec.seed}` +
            (run.spec.deadline ? `, deadline ${run.spec.deadline} s (${run.spec.stragglers})` : "")),
          run.error ? h("span", { class: "state-failed" }, run.error) : null,
          run.stopped ? h("span", { class: "muted", "data-key": "stopped" }, `Stopped: ${run.stopped}`) : null),
        h("section", { id: "strategy" }, h("h2", {}, "Strategy"), facts(window.FleetRunSpec.facts(run.spec, num))),
        h("div", { class: "grid2" },
          lineChart({ title: "Accuracy per round", xLabel: "round", yMin: 0, yMax: 1, series: [
            { name: "global (test split)", points: point((r) => r.global_accuracy) },
            { name: "mean local", points: point((r) => r.mean_local_accuracy) }] }),
          lineChart({ title: "Mean local loss per round", xLabel: "round", series: [{ name: "mean loss", points: point((r) => r.mean_loss) }] }),
          run.spec.privacy ? lineChart({ title: `Privacy spent: epsilon at delta ${run.spec.privacy.delta}`, xLabel: "round", yMin: 0,
            series: [{ name: "epsilon", points: point((r) => r.privacy && r.privacy.epsilon) }] }) : null),
        h("h2", {}, "Per round"),
        rounds.length ? table(null, [{ label: "Round", num: true }, { label: "Version", num: true }, { label: "Picked", num: true },
          { label: "Finished", num: true }, { label: "Failed", num: true }, { label: "Straggled", num: true }, { label: "Dropped", num: true },
          { label: "Mean loss", num: true }, { label: "Global acc.", num: true }, { label: "Local acc.", num: true },
          { label: "Seconds", num: true }, { label: "Simulated s", num: true }, "Participants and stragglers"],
          rounds.slice().reverse().map((r) => h("tr", {}, td(r.round, true), td(r.version ?? "—", true), td(num(r.picked), true),
            td(num(r.finished), true), td(num(r.failed), true), td(num(r.straggled), true), td(num(r.dropped), true),
            td(fmt(r.mean_loss), true), td(pct(r.global_accuracy), true), td(pct(r.mean_local_accuracy), true),
            td(num(r.seconds, 2), true), td(num(r.simulated_seconds, 1), true),
            h("td", {}, idList(`participants of round ${r.round}`, "participants", r.participants), " ",
              idList(`stragglers of round ${r.round}`, "stragglers", r.stragglers)))), { id: "per-round" })
          : h("p", { class: "muted" }, "No round has finished yet."));
    }
    return { refresh, every: PAGE_EVERY, stopOn404: true };
  }
  const epsilonOf = (r) => (r && r.privacy && r.privacy.epsilon !== null && r.privacy.epsilon !== undefined ? fmt(r.privacy.epsilon) : "—");
  function idList(key, label, ids) {
    ids = ids || [];
    if (!ids.length) return h("span", { class: "muted" }, `no ${label}`);
    const shown = ids.slice(0, 50);
    return h("details", { "data-key": key }, h("summary", {}, `${num(ids.length)} ${label}`),
      shown.map((d, i) => [i ? ", " : "", h("a", { href: "#/devices/" + encodeURIComponent(d) }, d)]),
      ids.length > shown.length ? ` and ${num(ids.length - shown.length)} more` : "");
  }

  // ---- start ----
  document.getElementById("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("key-input");
    if (input.value.trim()) sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    refreshKey().then(refreshNow);
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    refreshKey().then(refreshNow);
  });
  window.addEventListener("hashchange", () => {
    go();
    document.getElementById("view").focus({ preventScroll: true }); // screen readers start at the new page
  });
  refreshKey();
  go();
})();
