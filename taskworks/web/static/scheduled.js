// taskworks dashboard: the scheduled tasks page (templates/scheduled.html), loaded after
// app.js, whose helpers (api, el, fill, poll, show, when) it uses. Same safety rule:
// text goes in through textContent or setAttribute only, never as HTML.
"use strict";

function scheduledPage() {
  const refresh = async () => {
    const [summary, rows] = await Promise.all([api("/api/scheduled/summary"), api("/api/scheduled?limit=100")]);
    document.getElementById("scheduled-total").textContent = summary.total;
    const soon = summary.due_within;
    document.getElementById("scheduled-soon").textContent = `${soon["1m"]} · ${soon["1h"]} · ${soon["1d"]}`;
    const next = when(summary.next_due);  // "YYYY-MM-DD HH:MM:SS", or a dash
    document.getElementById("scheduled-next").textContent = next.slice(11) || next;
    document.getElementById("scheduled-next-day").textContent =
      summary.next_due ? `${next.slice(0, 10)} UTC` : "nothing scheduled";
    document.getElementById("mover-lag").textContent = `${summary.mover_lag.toFixed(1)} s`;
    fill("scheduled-queues", Object.entries(summary.by_queue).map(([queue, n]) =>
      el("tr", {"data-queue": queue}, el("td", {}, queue), el("td", {}, n))));
    fill("scheduled", rows.map((t) => el("tr", {"data-id": t.id},
      el("td", {}, when(t.due)), el("td", {}, t.name), el("td", {class: "mono"}, t.id),
      el("td", {}, t.queue), el("td", {}, t.priority), el("td", {}, t.retries),
      el("td", {}, el("button", {type: "button", class: "cancel", on: {click: async () => {
        try {
          await api(`/api/scheduled/${encodeURIComponent(t.id)}`, {method: "DELETE"});
          show(`scheduled task ${t.id} cancelled`);
          await refresh();
        } catch (e) { show(e.message, true); }
      }}}, "Cancel")))));
  };
  poll(refresh, 3000);
}

PAGES["scheduled"] = scheduledPage;  // app.js starts it on DOMContentLoaded
