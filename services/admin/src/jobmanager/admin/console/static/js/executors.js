// The Executors page (GET /executors): every executor that reported in the last hour, its
// scripts, its busy slots, and whether it is alive: whether it reported lately.

import { ago, secondsSince } from "./ago.js";
import { api } from "./api.js";
import { $, badge, h } from "./dom.js";
import { describe, every, start } from "./shell.js";

// Executors report every 30 s by default (JOBMANAGER_REPORT_INTERVAL_S); three reports
// missed is no late report but a stopped executor. The API does not know an executor's
// interval, so a slower one shows as silent between its reports.
const ALIVE_S = 90;

const alive = (executor) => secondsSince(executor.last_seen_at) <= ALIVE_S;

function state(executor) {
  return alive(executor) ? badge("alive", "succeeded") : badge("silent", "failed");
}

function scripts(executor) {
  if (!executor.scripts.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "scripts" }, executor.scripts.map((name) => h("li", {}, h("code", {}, name))));
}

function row(executor) {
  return h(
    "tr",
    { dataset: { key: executor.id } },
    h("th", { scope: "row", class: "name" }, executor.id),
    h("td", { class: "state" }, state(executor)),
    h("td", {}, scripts(executor)),
    h("td", {}, `${executor.busy} of ${executor.concurrency}`),
    h("td", {}, ago(executor.started_at)),
    h("td", {}, ago(executor.last_seen_at)),
  );
}

function summarize(executors) {
  const living = executors.filter(alive);
  const slots = living.reduce((n, e) => n + e.concurrency, 0);
  const busy = living.reduce((n, e) => n + e.busy, 0);
  const silent = executors.length - living.length;
  $("[data-executors-summary]").textContent =
    `${living.length} alive, ${busy} of ${slots} slots busy` + (silent ? `; ${silent} silent` : "");
}

async function refresh() {
  const status = $("[data-status]");
  try {
    const executors = await api.get("/executors");
    const rows = executors.map(row);
    const none = h("tr", { class: "empty" }, h("td", { colspan: 6 }, "No executor reported in the last hour."));
    $("[data-executors]").replaceChildren(...(rows.length ? rows : [none]));
    summarize(executors);
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("stale");
  } catch (error) {
    status.textContent = `Not up to date: ${describe(error)}`;
    status.classList.add("stale");
  }
}

if (start()) every(5000, refresh);
