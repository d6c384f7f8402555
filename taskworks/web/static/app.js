// taskworks dashboard: fills the server-rendered pages from the API and keeps them live
// by polling. Safety rule: user-supplied text only ever goes in through textContent or
// setAttribute; this file never assigns innerHTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const STATE_COLORS = {
  SUCCEEDED: "#2e9d57", FAILED: "#d64545", RUNNING: "#2f6fdb", QUEUED: "#8a8fdd",
  PENDING: "#b7bcc6", SKIPPED: "#d9a53f", CANCELLED: "#7c7c7c",
};
const SERIES_COLORS = ["#2f6fdb", "#d64545", "#2e9d57", "#d9a53f", "#8e44ad", "#16a2b8",
  "#e67e22", "#34495e"];

// -- small helpers ---------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (value !== null && value !== undefined && value !== false) {
      node.setAttribute(key, String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : iso + "Z");
  return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19);
}

function show(message, isError) {
  const box = document.getElementById("message");
  if (!box) return;
  box.textContent = message;
  box.className = isError ? "message error" : "message";
  box.hidden = false;
}

function setLive(ok) {
  const dot = document.getElementById("live");
  if (dot) dot.className = ok ? "live ok" : "live down";
}

const GUARD = {"X-Taskworks": "1"};

async function api(path, options) {
  const opts = Object.assign({credentials: "same-origin"}, options || {});
  // the server refuses any write without this header: a page on another site cannot
  // send it (docs/security.md, "Cross-site requests")
  opts.headers = Object.assign({}, GUARD, opts.body ? {"Content-Type": "application/json"} : {}, opts.headers || {});
  const response = await fetch(path, opts);
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("not logged in");
  }
  const body = response.headers.get("content-type", "").includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail;
    const text = Array.isArray(detail) ? detail.map((d) => d.msg).join("; ") : (detail || response.statusText);
    throw new Error(text);
  }
  return body;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function poll(fn, interval) {
  let timer = null;
  const tick = async () => {
    try {
      await fn();
      setLive(true);
    } catch (err) {
      setLive(false);
    }
    timer = setTimeout(tick, interval);
  };
  tick();
  return () => clearTimeout(timer);
}

function badge(state) {
  return el("span", {class: `state state-${String(state).toLowerCase()}`}, state);
}

// -- overview ----------------------------------------------------------------------------
const history = [];  // [{t, backlog: {queue: n}}], the last HISTORY points
const HISTORY = 90;

function drawChart() {
  const chart = document.getElementById("queue-chart");
  const legend = document.getElementById("queue-legend");
  const width = 800, height = 220, left = 40, bottom = 20, top = 10;
  const queues = history.length ? Object.keys(history[history.length - 1].backlog) : [];
  const max = Math.max(1, ...history.flatMap((p) => Object.values(p.backlog)));
  const x = (i) => left + (width - left - 10) * (history.length > 1 ? i / (HISTORY - 1) : 0);
  const y = (v) => height - bottom - (height - bottom - top) * (v / max);
  const nodes = [
    svg("line", {x1: left, y1: height - bottom, x2: width - 10, y2: height - bottom, class: "axis"}),
    svg("line", {x1: left, y1: top, x2: left, y2: height - bottom, class: "axis"}),
    svg("text", {x: left - 6, y: top + 10, "text-anchor": "end", class: "tick"}, max),
    svg("text", {x: left - 6, y: height - bottom, "text-anchor": "end", class: "tick"}, 0),
  ];
  legend.replaceChildren();
  queues.forEach((queue, index) => {
    const color = SERIES_COLORS[index % SERIES_COLORS.length];
    const points = history.map((p, i) => `${x(i).toFixed(1)},${y(p.backlog[queue] || 0).toFixed(1)}`);
    nodes.push(svg("polyline", {points: points.join(" "), fill: "none", stroke: color,
      "stroke-width": 2, "data-queue": queue}));
    legend.append(el("span", {class: "key"}, el("i", {style: `background:${color}`}), queue));
  });
  chart.replaceChildren(...nodes);
}

async function refreshQueues() {
  const queues = await api("/api/queues");
  history.push({t: Date.now(), backlog: Object.fromEntries(queues.map((q) => [q.name, q.backlog]))});
  while (history.length > HISTORY) history.shift();
  drawChart();
  document.getElementById("backlog").textContent = queues.reduce((n, q) => n + q.backlog, 0);
  fill("queues", queues.map((q) => el("tr", {}, el("td", {}, q.name), el("td", {}, q.waiting),
    el("td", {}, q.unacked), el("td", {}, q.backlog))));
}

async function refreshStats() {
  const stats = await api("/api/journal/stats?window=300");
  document.getElementById("throughput").textContent = stats.throughput.toFixed(2);
  document.getElementById("failure-rate").textContent = `${(stats.failure_rate * 100).toFixed(1)} %`;
}

async function refreshWorkers() {
  const found = await api("/api/workers?timeout=1");
  document.getElementById("worker-count").textContent = found.workers.length;
  fill("workers", found.workers.map((w) => el("tr", {},
    el("td", {}, w.hostname), el("td", {}, `${w.pool.implementation || "?"} × ${w.pool["max-concurrency"] || "?"}`),
    el("td", {}, w.active), el("td", {}, w.processed),
    el("td", {}, w.active_tasks.map((t) => t.name).join(", ")))));
}

function overviewPage() {
  poll(refreshQueues, 2000);
  poll(refreshStats, 5000);
  poll(refreshWorkers, 5000);
}

// -- journal -----------------------------------------------------------------------------
function journalPage() {
  const form = document.getElementById("journal-filters");
  const open = new Set();  // journal ids whose details are shown
  const refresh = async () => {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) params.set(key, value);
    params.set("limit", "200");
    const rows = await api(`/api/journal?${params}`);
    const out = [];
    for (const r of rows) {
      const row = el("tr", {class: `clickable state-row-${r.state}`, "data-id": r.id, on: {click: () => {
        open.has(r.id) ? open.delete(r.id) : open.add(r.id);
        refresh().catch((e) => show(e.message, true));
      }}},
      el("td", {}, when(r.finished_at)), el("td", {}, r.name), el("td", {class: "mono"}, r.task_id),
      el("td", {}, badge(r.state)), el("td", {}, r.attempt), el("td", {}, r.severity || "–"),
      el("td", {}, (r.duration_ms || 0).toFixed(1)),
      el("td", {}, r.exc_type ? `${r.exc_type}: ${r.exc_message}` : ""));
      out.push(row);
      if (open.has(r.id)) {
        out.push(el("tr", {class: "details"}, el("td", {colspan: 8},
          el("div", {}, `queue ${r.queue || "–"} · host ${r.hostname || "–"} · pid ${r.pid || "–"}`),
          el("div", {class: "mono"}, `args ${JSON.stringify(r.args)} kwargs ${JSON.stringify(r.kwargs)}`),
          r.result !== null ? el("div", {class: "mono"}, `result ${r.result}`) : null,
          r.traceback ? el("pre", {class: "traceback"}, r.traceback) : null)));
      }
    }
    fill("journal", out);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh().catch((e) => show(e.message, true));
  });
  poll(refresh, 3000);
}

// -- dead letters ------------------------------------------------------------------------
function dlqPage() {
  const refresh = async () => {
    const rows = await api("/api/dlq?limit=200");
    fill("dlq", rows.map((r) => el("tr", {"data-id": r.id},
      el("td", {}, r.id), el("td", {}, when(r.failed_at)), el("td", {}, r.name),
      el("td", {}, r.reason), el("td", {}, r.attempts),
      el("td", {}, r.exc_type ? `${r.exc_type}: ${r.exc_message}` : "", r.traceback ? el("details", {}, el("summary", {}, "traceback"), el("pre", {class: "traceback"}, r.traceback)) : null),
      el("td", {class: "replays"}, r.replay_count),
      el("td", {}, el("button", {type: "button", class: "replay", on: {click: async () => {
        try {
          const done = await api(`/api/dlq/${r.id}/replay`, {method: "POST"});
          show(`dead letter ${r.id} replayed as task ${done.replayed[r.id]}`);
          await refresh();
        } catch (e) { show(e.message, true); }
      }}}, "Replay")))));
  };
  poll(refresh, 3000);
}

// -- breakers ----------------------------------------------------------------------------
function breakersPage() {
  const refresh = async () => {
    const rows = await api("/api/breakers");
    fill("breakers", rows.map((b) => el("tr", {"data-name": b.name},
      el("td", {}, b.name), el("td", {}, badge(b.state)), el("td", {}, b.failures),
      el("td", {}, b.failures_total), el("td", {}, b.retry_after ? `${b.retry_after.toFixed(1)} s` : "–"),
      el("td", {}, b.last_transition ? `${b.last_transition} (${b.last_reason || ""})` : "–"),
      el("td", {}, b.last_error || ""),
      el("td", {}, el("button", {type: "button", class: "reset", on: {click: async () => {
        try {
          await api(`/api/breakers/${encodeURIComponent(b.name)}/reset`, {method: "POST",
            body: JSON.stringify({reason: "reset from the dashboard"})});
          show(`breaker ${b.name} reset`);
          await refresh();
        } catch (e) { show(e.message, true); }
      }}}, "Reset")))));
  };
  poll(refresh, 2000);
}

// -- autoscale ---------------------------------------------------------------------------
function autoscalePage() {
  const refresh = async () => {
    const [found, replicas] = await Promise.all([api("/api/autoscale?limit=50"), api("/api/autoscale/replicas")]);
    const groups = (found.status && found.status.groups) || {};
    document.getElementById("autoscale-state").textContent = found.running
      ? `supervisor running: ${found.status.active} active workers, CPU ${found.status.cpu_percent ?? "–"} %, memory ${found.status.memory_percent ?? "–"} %`
      : "no supervisor is running (taskworks up / taskworks autoscale run); desired counts below are what KEDA would get";
    fill("groups", Object.entries(replicas).map(([name, r]) => {
      const g = groups[name] || {};
      return el("tr", {}, el("td", {}, name), el("td", {}, r.desired), el("td", {}, g.active ?? "–"),
        el("td", {}, g.draining ?? "–"), el("td", {}, r.backlog), el("td", {}, g.reason || (r.emergency ? "emergency" : "")));
    }));
    fill("decisions", found.decisions.map((d) => el("tr", {},
      el("td", {}, when(d.decided_at)), el("td", {}, d.group), el("td", {}, `${d.previous} → ${d.desired}`),
      el("td", {}, d.backlog), el("td", {}, Number(d.cpu_percent).toFixed(0)),
      el("td", {}, Number(d.memory_percent).toFixed(0)), el("td", {}, d.reason))));
  };
  poll(refresh, 3000);
}

// -- workflows and runs ------------------------------------------------------------------
function workflowsPage() {
  const inputs = {};  // keep what the user typed across refreshes
  let shown = null;  // the definitions on screen: rebuilt only when they change
  const refreshDefinitions = async () => {
    const rows = await api("/api/workflows");
    const latest = new Map();
    for (const d of rows) if (!d.name.startsWith(JOB_WORKFLOW)) latest.set(d.name, d);
    const key = JSON.stringify([...latest.values()].map((d) => [d.name, d.version]));
    if (key === shown) return;
    shown = key;
    fill("definitions", [...latest.values()].map((d) => {
      const input = el("input", {class: "run-input", placeholder: "{}", value: inputs[d.name] || ""});
      input.addEventListener("input", () => { inputs[d.name] = input.value; });
      return el("tr", {"data-workflow": d.name}, el("td", {}, d.name), el("td", {}, d.version),
        el("td", {}, when(d.created_at)), el("td", {}, input),
        el("td", {}, el("button", {type: "button", class: "start", on: {click: async () => {
          let body = {};
          try {
            body = {input: input.value.trim() ? JSON.parse(input.value) : null};
          } catch (e) { show(`input: not JSON (${e.message})`, true); return; }
          try {
            const run = await api(`/api/workflows/${encodeURIComponent(d.name)}/runs`, {method: "POST", body: JSON.stringify(body)});
            window.location.assign(`/runs/${encodeURIComponent(run.id)}`);
          } catch (e) { show(e.message, true); }
        }}}, "Start")));
    }));
  };
  const refreshRuns = async () => {
    const rows = await api("/api/runs?limit=50");
    fill("runs", rows.map((r) => el("tr", {},
      el("td", {}, el("a", {href: `/${r.workflow.startsWith(JOB_WORKFLOW) ? "jobs" : "runs"}/${encodeURIComponent(r.id)}`, class: "mono"}, r.id)),
      el("td", {}, r.workflow), el("td", {}, badge(r.state)), el("td", {}, when(r.created_at)),
      el("td", {}, when(r.finished_at)), el("td", {}, r.error || ""))));
  };
  poll(refreshDefinitions, 5000);
  poll(refreshRuns, 2000);
}

// Layered layout: a step's column is the longest path to it from a root.
function layout(steps) {
  const byName = new Map(steps.map((s) => [s.name, s]));
  const depth = new Map();
  const depthOf = (name, seen) => {
    if (depth.has(name)) return depth.get(name);
    const step = byName.get(name);
    const deps = step ? step.depends_on.filter((d) => byName.has(d) && !seen.has(d)) : [];
    const d = deps.length ? 1 + Math.max(...deps.map((x) => depthOf(x, new Set([...seen, name])))) : 0;
    depth.set(name, d);
    return d;
  };
  steps.forEach((s) => depthOf(s.name, new Set()));
  const columns = [];
  for (const s of steps) (columns[depth.get(s.name)] ||= []).push(s.name);
  const place = new Map();
  columns.forEach((names, c) => names.forEach((n, r) => place.set(n, {c, r})));
  return {place, columns: columns.length, rows: Math.max(1, ...columns.map((c) => c.length))};
}

function drawDag(steps) {
  const dag = document.getElementById("dag");
  const W = 170, H = 44, GX = 60, GY = 24, PAD = 10;
  const {place, columns, rows} = layout(steps);
  const width = PAD * 2 + columns * W + (columns - 1) * GX;
  const height = PAD * 2 + rows * H + (rows - 1) * GY;
  dag.setAttribute("viewBox", `0 0 ${width} ${height}`);
  dag.setAttribute("width", width);
  dag.setAttribute("height", height);
  const pos = (name) => {
    const p = place.get(name);
    return {x: PAD + p.c * (W + GX), y: PAD + p.r * (H + GY)};
  };
  const nodes = [svg("defs", {})];
  nodes[0].append(svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto"}));
  nodes[0].firstChild.append(svg("path", {d: "M0,0 L10,5 L0,10 z", class: "arrowhead"}));
  for (const s of steps) {
    for (const dep of s.depends_on) {
      if (!place.has(dep)) continue;
      const a = pos(dep), b = pos(s.name);
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      nodes.push(svg("path", {d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`,
        class: "edge", "marker-end": "url(#arrow)"}));
    }
  }
  for (const s of steps) {
    const {x, y} = pos(s.name);
    const group = svg("g", {class: "node", "data-step": s.name, "data-state": s.state});
    group.append(svg("rect", {x, y, width: W, height: H, rx: 6, fill: STATE_COLORS[s.state] || "#999"}));
    group.append(svg("text", {x: x + W / 2, y: y + 18, "text-anchor": "middle", class: "node-name"}, s.name));
    group.append(svg("text", {x: x + W / 2, y: y + 34, "text-anchor": "middle", class: "node-state"}, s.state.toLowerCase()));
    group.append(svg("title", {}, `${s.name}: ${s.state}${s.error ? " – " + s.error : ""}`));
    nodes.push(group);
  }
  dag.replaceChildren(...nodes);
}

function runPage() {
  const runId = document.body.dataset.run;
  const path = `/api/runs/${encodeURIComponent(runId)}`;
  const refresh = async () => {
    const run = await api(path);
    const state = document.getElementById("run-state");
    state.textContent = run.state;
    state.className = `state state-${run.state.toLowerCase()}`;
    document.getElementById("run-error").textContent = run.error || "";
    drawDag(run.steps);
    fill("steps", run.steps.map((s) => el("tr", {"data-step": s.name},
      el("td", {}, s.name), el("td", {}, s.task || "–"), el("td", {}, badge(s.state)),
      el("td", {}, s.tries), el("td", {}, when(s.started_at)), el("td", {}, when(s.finished_at)),
      el("td", {class: "mono"}, s.error || (s.result === null ? "" : JSON.stringify(s.result))))));
  };
  const act = (action) => async () => {
    try {
      await api(`${path}/${action}`, {method: "POST"});
      show(`run ${action} requested`);
      await refresh();
    } catch (e) { show(e.message, true); }
  };
  document.getElementById("run-cancel").addEventListener("click", act("cancel"));
  document.getElementById("run-retry").addEventListener("click", act("retry"));
  poll(refresh, 1000);
}

// -- map-reduce jobs and datasets --------------------------------------------------------
const JOB_WORKFLOW = "mapreduce.";  // the workflows jobs generate: shown as jobs, not runs
const STRIP_MAX = 200;  // above this many partitions the list shows the overall bar only

function pct(value) {
  const n = Number(value);
  return isFinite(n) ? Math.max(0, Math.min(100, n)) : 0;
}

// A progress bar: kind "job" (coloured by the job's state) or "part" (one partition).
function bar(kind, state, percent, attrs) {
  const value = pct(percent);
  const lower = String(state).toLowerCase();
  return el("span", Object.assign({class: `bar ${kind}-${lower}`, role: "progressbar",
    "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": value, "data-percent": value,
    "data-state": state}, attrs || {}), el("span", {class: "fill", style: `width:${value}%`}));
}

function partitionBar(p) {
  return bar("part", p.state, p.percent, {"data-partition": p.index,
    title: `partition ${p.index}: items [${p.start}, ${p.end}) ${p.state}`});
}

function jobsPage() {
  const form = document.getElementById("job-filters");
  const details = new Map();  // job id -> its last detail, refetched while it may change
  const refresh = async () => {
    const params = new URLSearchParams({limit: "50"});
    const state = new FormData(form).get("state");
    if (state) params.set("state", state);
    const rows = await api(`/api/jobs?${params}`);
    await Promise.all(rows.filter((j) => j.partitions_total <= STRIP_MAX).map(async (j) => {
      const known = details.get(j.id);
      if (!known || known.state !== j.state || j.state === "running") {
        details.set(j.id, await api(`/api/jobs/${encodeURIComponent(j.id)}`));
      }
    }));
    fill("jobs", rows.map((j) => {
      const link = `/jobs/${encodeURIComponent(j.id)}`;
      const detail = details.get(j.id);
      const strip = detail && detail.partitions.length === j.partitions_total
        ? el("span", {class: "strip"}, ...detail.partitions.map((p) => partitionBar(p)))
        : el("span", {class: "sub"}, Object.entries(j.partition_states).map(([s, n]) => `${s.toLowerCase()} ${n}`).join(" · "));
      return el("tr", {"data-job": j.id},
        el("td", {}, el("a", {href: link, class: "mono"}, j.id.slice(0, 8))),
        el("td", {}, j.dataset), el("td", {}, j.function), el("td", {}, badge(j.state)),
        el("td", {}, bar("job", j.state, j.percent),
          el("span", {class: "pct"}, `${j.partitions_done}/${j.partitions_total}`)),
        el("td", {}, strip), el("td", {}, when(j.created_at)), el("td", {}, when(j.finished_at)),
        el("td", {}, j.state === "completed" ? el("a", {href: `${link}#result`, class: "result-link"}, "result") : ""));
    }));
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh().catch((e) => show(e.message, true));
  });
  poll(refresh, 2000);
}

function jobPage() {
  const jobId = document.body.dataset.job;
  const path = `/api/jobs/${encodeURIComponent(jobId)}`;
  let shownResult = null;  // the state whose result is on screen
  const refresh = async () => {
    const job = await api(path);
    const state = document.getElementById("job-state");
    state.textContent = job.state;
    state.className = `state state-${job.state}`;
    const reduce = document.getElementById("job-reduce");
    reduce.textContent = job.reduce;
    reduce.className = `state state-${job.reduce.toLowerCase()}`;
    const overall = document.getElementById("job-bar");
    overall.replaceWith(bar("job", job.state, job.percent, {id: "job-bar", class: `bar bar-wide job-${job.state}`}));
    document.getElementById("job-progress").textContent =
      `${job.partitions_done} of ${job.partitions_total} partitions (${pct(job.percent).toFixed(0)} %), ${job.items} items`;
    document.getElementById("job-error").textContent = job.error || "";
    fill("partitions", job.partitions.map((p) => el("tr", {"data-partition": p.index},
      el("td", {}, p.index), el("td", {class: "mono"}, `[${p.start}, ${p.end})`),
      el("td", {}, badge(p.state)), el("td", {}, partitionBar(p)),
      el("td", {}, p.tries), el("td", {class: "mono"}, p.error || ""))));
    if (job.state === "completed" && shownResult !== job.finished_at) {
      const found = await api(`${path}/result`);
      document.getElementById("job-result").textContent = JSON.stringify(found.result, null, 2);
      document.getElementById("result").hidden = false;
      shownResult = job.finished_at;
    } else if (job.state !== "completed") {
      document.getElementById("result").hidden = true;
      shownResult = null;
    }
  };
  const act = (action) => async () => {
    try {
      await api(`${path}/${action}`, {method: "POST"});
      show(`job ${action} requested`);
      await refresh();
    } catch (e) { show(e.message, true); }
  };
  document.getElementById("job-cancel").addEventListener("click", act("cancel"));
  document.getElementById("job-retry").addEventListener("click", act("retry"));
  poll(refresh, 1000);
}

function datasetsPage() {
  const open = new Map();  // dataset name -> its head items, shown under its row
  const refresh = async () => {
    const rows = await api("/api/datasets");
    const out = [];
    for (const d of rows) {
      out.push(el("tr", {class: "clickable", "data-dataset": d.name, on: {click: async () => {
        try {
          if (open.has(d.name)) open.delete(d.name);
          else open.set(d.name, (await api(`/api/datasets/${encodeURIComponent(d.name)}?head=10`)).head);
          await refresh();
        } catch (e) { show(e.message, true); }
      }}},
      el("td", {}, d.name), el("td", {}, d.source), el("td", {class: "mono"}, d.origin || ""),
      el("td", {}, badge(d.state)), el("td", {}, d.row_count), el("td", {}, d.columns.join(", ")),
      el("td", {}, when(d.created_at))));
      if (open.has(d.name)) {
        const head = open.get(d.name);
        const columns = d.columns.length ? d.columns : [...new Set(head.flatMap((i) => Object.keys(i.data || {})))];
        out.push(el("tr", {class: "details"}, el("td", {colspan: 7},
          el("table", {class: "head"},
            el("thead", {}, el("tr", {}, el("th", {}, "#"), ...columns.map((c) => el("th", {}, c)))),
            el("tbody", {}, ...head.map((i) => el("tr", {}, el("td", {}, i.item_index),
              ...columns.map((c) => el("td", {class: "mono"}, i.data && c in i.data ? JSON.stringify(i.data[c]) : "")))))))));
      }
    }
    fill("datasets", out);
  };
  poll(refresh, 5000);
}

// -- login and logout --------------------------------------------------------------------
// Both are posted by script so that they carry the guard header like every other write;
// redirect "manual": the session cookie is set or cleared, then this page navigates.
async function post(path, body) {
  return fetch(path, {method: "POST", credentials: "same-origin", redirect: "manual",
    headers: Object.assign({}, GUARD, body ? {"Content-Type": "application/x-www-form-urlencoded"} : {}), body});
}

function loginPage() {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const response = await post("/login", new URLSearchParams(new FormData(form)));
      if (response.type === "opaqueredirect" || response.ok) {
        window.location.assign("/");
        return;
      }
      const body = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
      error.textContent = (body && body.detail) || `login failed (${response.status})`;
    } catch (e) {
      error.textContent = `login failed: ${e.message}`;
    }
    error.hidden = false;
  });
}

function logoutButton() {
  const form = document.querySelector("form.logout");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await post("/logout");
    } finally {
      window.location.assign("/login");
    }
  });
}

const PAGES = {
  "login": loginPage, "overview": overviewPage, "journal": journalPage, "dead letters": dlqPage,
  "breakers": breakersPage, "autoscale": autoscalePage, "datasets": datasetsPage,
  "jobs": () => (document.body.dataset.job ? jobPage() : jobsPage()),
  "runs": () => (document.body.dataset.run ? runPage() : workflowsPage()),
};

document.addEventListener("DOMContentLoaded", () => {
  logoutButton();
  const start = PAGES[document.body.dataset.page];
  if (start) start();
});
