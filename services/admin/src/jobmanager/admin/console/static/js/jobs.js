// The Jobs page: the registered jobs; add and edit (in a dialog), enable or disable, remove,
// replay recorded events into a job (admin); test a job against a recent event (anyone).

import { api, can } from "./api.js";
import { confirmAction } from "./dialogs.js";
import { $, badge, h } from "./dom.js";
import { setUpJobForm } from "./job-form.js";
import { setUpJobReplay } from "./job-replay.js";
import { setUpJobTest } from "./job-test.js";
import { ListView } from "./live.js";
import { act, start } from "./shell.js";

let view;
let openForm;
let openTest;
let openReplay;

export function conditionText(condition) {
  const { path, op, value } = condition;
  return op === "exists" || op === "not_exists" ? `${path} ${op}` : `${path} ${op} ${JSON.stringify(value)}`;
}

/** "cancelled by: channel.removed (also the running run), …": the job's cancel_on. */
function cancelledBy(job) {
  if (!job.cancel_on?.length) return null;
  const each = job.cancel_on.flatMap((t, index) => [
    index ? "; " : "",
    h("code", {}, t.event_type),
    t.conditions.length ? ` if ${t.conditions.map(conditionText).join(" and ")}` : "",
    t.running ? " (also the running run)" : "",
  ]);
  return h("div", { class: "cancelled-by muted" }, "cancelled by: ", ...each);
}

function limits(job) {
  const parts = [`timeout ${job.timeout_s} s`];
  parts.push(job.max_attempts === 1 ? "1 attempt" : `${job.max_attempts} attempts`);
  if (job.max_attempts > 1 && job.retry_backoff_s) parts.push(`retry after ${job.retry_backoff_s} s`);
  if (job.max_concurrency) parts.push(`at most ${job.max_concurrency} at once`);
  if (job.pause_after_failures) parts.push(`pauses after ${job.pause_after_failures} failures in a row`);
  if (job.debounce_s) parts.push(`debounce ${job.debounce_s} s`);
  return parts.join(", ");
}

async function pauseOrResume(job) {
  const action = job.paused ? "resume" : "pause";
  const done = job.paused ? "resumed: its waiting runs run again" : "paused: its runs wait until it is resumed";
  await act(() => api.post(`/jobs/${job.id}/${action}`), `Job ${job.name} ${done}.`);
  view.refresh();
}

function state(job) {
  const shown = [badge(job.enabled ? "enabled" : "disabled")];
  if (job.paused) {
    shown.push(" ", badge("paused"), h("div", { class: "muted" }, job.paused_reason ?? ""));
  }
  return shown;
}

async function toggle(job) {
  const verb = job.enabled ? "disabled" : "enabled";
  await act(() => api.patch(`/jobs/${job.id}`, { enabled: !job.enabled }), `Job ${job.name} ${verb}.`);
  view.refresh();
}

async function remove(job, opener) {
  const sure = await confirmAction({
    title: `Remove job ${job.name}?`,
    message: "No new runs will be made for it. Its runs so far stay in their tables.",
    confirm: "Remove job",
    opener,
  });
  if (!sure) return;
  await act(() => api.delete(`/jobs/${job.id}`), `Job ${job.name} removed.`);
  view.refresh();
}

function button(label, action, job, onclick, extra = {}) {
  return h(
    "button",
    { type: "button", dataset: { action }, "aria-label": `${label} job ${job.name}`, onclick, ...extra },
    label,
  );
}

function row(job) {
  const { conditions } = job.trigger;
  return h(
    "tr",
    {},
    h(
      "th",
      { scope: "row" },
      h("div", { class: "name" }, job.name),
      job.description ? h("div", { class: "muted" }, job.description) : null,
    ),
    h(
      "td",
      {},
      h("code", {}, job.trigger.event_type),
      conditions.length
        ? h("ul", { class: "conditions" }, conditions.map((c) => h("li", {}, h("code", {}, conditionText(c)))))
        : null,
      cancelledBy(job),
    ),
    h("td", {}, h("code", {}, job.script)),
    h("td", {}, job.lane === null ? h("span", { class: "muted" }, "none (parallel)") : h("code", {}, job.lane)),
    h("td", {}, limits(job)),
    h("td", {}, ...state(job)),
    h(
      "td",
      { class: "actions" },
      button("Test", "test", job, (event) => openTest(job, event.currentTarget)),
      can("admin") && button("Edit", "edit", job, (event) => openForm(job, event.currentTarget)),
      can("admin") && button("Replay", "replay", job, (event) => openReplay(job, event.currentTarget)),
      can("operator") && button(job.paused ? "Resume" : "Pause", "pause", job, () => pauseOrResume(job)),
      can("admin") && button(job.enabled ? "Disable" : "Enable", "toggle", job, () => toggle(job)),
      can("admin") &&
        button("Remove", "remove", job, (event) => remove(job, event.currentTarget), { class: "danger" }),
    ),
  );
}

if (start()) {
  view = new ListView({ path: "/jobs", root: $(".list"), row, empty: "No jobs match." }).start();
  openForm = setUpJobForm(() => view.refresh());
  openTest = setUpJobTest(conditionText);
  openReplay = setUpJobReplay();
  $("[data-action=add-job]").addEventListener("click", (event) => openForm(null, event.currentTarget));
}
