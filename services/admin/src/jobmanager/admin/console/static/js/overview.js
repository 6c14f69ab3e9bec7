// The Overview, the console's landing page: what ended per minute (or quarter hour) by
// outcome, drawn by uPlot (served by the admin, see static/vendor/MANIFEST.json), the jobs
// that fail most, the backlog, paused jobs, executors and dead letters (GET /activity).

import { api } from "./api.js";
import { $, h, time } from "./dom.js";
import { every, problem, start } from "./shell.js";

const PER = { hour: "per minute", day: "per 15 minutes" };
let chart = null;
let windowName = "hour";

function colour(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** One card of the row at the top: a term and its figure (a dl group). */
function figure(label, value, hint = "") {
  const note = hint ? h("span", { class: "muted" }, ` ${hint}`) : null;
  return h("div", {}, h("dt", {}, label), h("dd", {}, h("span", { class: "figure" }, String(value)), note));
}

function showFigures(activity) {
  const slots = activity.executors.reduce((n, e) => n + e.concurrency, 0);
  const busy = activity.executors.reduce((n, e) => n + e.busy, 0);
  const dead = activity.dead_letters ?? "?";
  $("[data-figures]").replaceChildren(
    figure("Waiting", activity.queued, "runs queued"),
    figure("Busy lanes", activity.lanes_busy, `${activity.lanes_waiting} more due`),
    figure("Executors", activity.executors.length, `${busy} of ${slots} slots busy`),
    figure("Paused jobs", activity.paused.length),
    figure("Dead letters", dead, activity.dead_letters === null ? "broker not reachable" : "parked messages"),
  );
}

function series(label, stroke, fill, align) {
  const paths = uPlot.paths.bars({ size: [0.45, 40], align });
  return { label, stroke, fill, width: 1, paths, points: { show: false } };
}

function showChart(activity) {
  const box = $("[data-chart]");
  const xs = activity.buckets.map((b) => Date.parse(b.at) / 1000 + activity.bucket_s / 2);
  const ok = activity.buckets.map((b) => b.succeeded);
  const bad = activity.buckets.map((b) => b.failed);
  const total = (values) => values.reduce((a, b) => a + b, 0);
  $("[data-per]").textContent = PER[activity.window];
  $("[data-chart-summary]").textContent =
    `In the last ${activity.window}: ${total(ok)} succeeded, ${total(bad)} failed.`;
  const data = [xs, ok, bad];
  if (chart && chart.windowName === activity.window) {
    chart.setData(data);
    return;
  }
  chart?.destroy();
  const options = {
    width: Math.max(box.clientWidth, 300),
    height: 240,
    scales: { x: { time: true }, y: { range: (_, min, max) => [0, Math.max(max, 1)] } },
    axes: [
      { stroke: colour("--muted"), grid: { stroke: colour("--line") } },
      { stroke: colour("--muted"), grid: { stroke: colour("--line") } },
    ],
    series: [
      {},
      series("Succeeded", colour("--ok"), colour("--ok-wash"), -1),
      series("Failed", colour("--bad"), colour("--bad-wash"), 1),
    ],
  };
  chart = new uPlot(options, data, box);
  chart.windowName = activity.window;
}

function showFailing(activity) {
  const rows = activity.jobs.map((j) =>
    h(
      "tr",
      {},
      h("td", { class: "name" }, j.job),
      h("td", {}, String(j.failed)),
      h("td", {}, String(j.succeeded)),
      h("td", {}, `${Math.round(j.failure_rate * 100)} %`),
    ),
  );
  $("[data-failing]").replaceChildren(
    ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No failures in this window."))]),
  );
}

function showPaused(activity) {
  const items = activity.paused.map((job) =>
    h("li", {}, h("a", { href: `/jobs?q=${encodeURIComponent(job.name)}` }, job.name), " ", h("span", { class: "muted" }, job.paused_reason ?? ""), " ", time(job.paused_at)),
  );
  $("[data-paused]").replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "None: every job runs.")]));
}

function showExecutors(activity) {
  const rows = activity.executors.map((e) =>
    h("tr", {}, h("td", { class: "name" }, e.id), h("td", {}, `${e.busy} of ${e.concurrency}`), h("td", {}, time(e.last_seen_at))),
  );
  $("[data-executors]").replaceChildren(
    ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No executor reported lately."))]),
  );
}

async function refresh() {
  let activity;
  try {
    activity = await api.get("/activity", { window: windowName });
  } catch (error) {
    problem(error);
    return;
  }
  showFigures(activity);
  showChart(activity);
  showFailing(activity);
  showPaused(activity);
  showExecutors(activity);
  $("[data-status]").textContent = `Updated ${new Date().toLocaleTimeString()}`;
}

if (start()) {
  const again = every(5000, refresh);
  for (const input of document.querySelectorAll('input[name="window"]')) {
    input.addEventListener("change", () => {
      windowName = input.value;
      again();
    });
  }
  // The chart's colours come from the stylesheet: drawn again when the scheme changes.
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    chart?.destroy();
    chart = null;
    again();
  });
  addEventListener("resize", () => chart?.setSize({ width: Math.max($("[data-chart]").clientWidth, 300), height: 240 }));
}
