// The Executed Jobs and Failed Jobs pages: the finished runs with their Result and
// Feedback; Execute a failed run again, or many at once (operator); delete rows, one or
// many, and Auto Cleanup (admin).

import { api, can } from "./api.js";
import { Selection } from "./bulk.js";
import { confirmAction, openDialog, submitting } from "./dialogs.js";
import { $, RESULT, badge, clip, duration, h, time } from "./dom.js";
import { ListView } from "./live.js";
import { act, notify, problem, start } from "./shell.js";

const table = document.body.dataset.table; // "executed" or "failed"
const title = table === "failed" ? "Failed Jobs" : "Executed Jobs";
let view;

const selection = new Selection({
  root: $(".list"),
  noun: table === "failed" ? "failed run" : "executed run",
  actions: {
    execute: {
      method: "POST",
      path: "/failed/execute",
      verb: "execute again",
      confirm: "Execute again",
      note: "Each gets a new attempt, as with Execute.",
      done: "executing again",
      left: "no longer failed",
    },
    delete: {
      method: "DELETE",
      path: `/${table}`,
      verb: "delete",
      confirm: "Delete rows",
      note: `Their rows are deleted from ${title} for good.`,
      done: `deleted from ${title}`,
      left: `no longer in ${title}`,
    },
  },
});

async function execute(run) {
  const again = await act(() => api.post(`/failed/${run.id}/execute`));
  if (again) notify(`Run ${run.id} is executing again (attempt ${again.attempt}).`);
  view.refresh();
}

async function remove(run, opener) {
  const sure = await confirmAction({
    title: `Delete run ${run.id}?`,
    message: `The row of run ${run.id} (${run.job}) is deleted from ${title} for good.`,
    confirm: "Delete row",
    opener,
  });
  if (!sure) return;
  await act(() => api.delete(`/${table}/${run.id}`), `Run ${run.id} deleted from ${title}.`);
  view.refresh();
}

function actions(run) {
  const buttons = [];
  if (table === "failed" && can("operator")) {
    buttons.push(
      h(
        "button",
        {
          type: "button",
          dataset: { action: "execute" },
          "aria-label": `Execute run ${run.id} again`,
          onclick: () => execute(run),
        },
        "Execute",
      ),
    );
  }
  if (can("admin")) {
    buttons.push(
      h(
        "button",
        {
          type: "button",
          class: "danger",
          dataset: { action: "delete" },
          "aria-label": `Delete run ${run.id}`,
          onclick: (event) => remove(run, event.currentTarget),
        },
        "Delete",
      ),
    );
  }
  return buttons;
}

function row(run) {
  const id = h(
    "th",
    { scope: "row" },
    selection.box(run),
    h("a", { href: `/runs/${run.id}`, "aria-label": `Run ${run.id}` }, String(run.id)),
  );
  const lane = h("td", {}, run.lane === null ? h("span", { class: "muted" }, "none") : h("code", {}, run.lane));
  const command = h("td", { class: "command" }, clip(run.command, 200));
  if (table === "failed") {
    return h(
      "tr",
      {},
      id,
      h("td", { class: "job" }, run.job),
      h("td", { class: "feedback failed" }, clip(run.feedback || "(no feedback)", 300)),
      lane,
      command,
      h("td", {}, time(run.finished_at)),
      h("td", {}, String(run.attempt)),
      h("td", { class: "actions" }, actions(run)),
    );
  }
  return h(
    "tr",
    {},
    id,
    h("td", { class: "job" }, run.job),
    lane,
    command,
    h("td", {}, time(run.finished_at)),
    h("td", {}, duration(run.duration_s)),
    h("td", {}, badge(`${run.result} ${RESULT[run.result] ?? ""}`.trim(), "succeeded")),
    h("td", { class: "feedback" }, clip(run.feedback, 120)),
    h("td", { class: "actions" }, actions(run)),
  );
}

// -- Auto Cleanup ------------------------------------------------------------------------

const UNITS = [86400, 3600, 60, 1];
const METHODS = {
  row_count: (s) => `keeps at most ${s.max_rows.toLocaleString()} rows`,
  row_age: (s) => `deletes rows older than ${age(s.max_age_s)}`,
  both: (s) =>
    `deletes rows older than ${age(s.max_age_s)}, keeps at most ${s.max_rows.toLocaleString()} rows`,
};

function age(seconds) {
  const names = { 86400: "day", 3600: "hour", 60: "minute", 1: "second" };
  const unit = UNITS.find((u) => seconds % u === 0 && seconds >= u) ?? 1;
  const count = seconds / unit;
  return `${count} ${names[unit]}${count === 1 ? "" : "s"}`;
}

function summarize(settings) {
  $("[data-cleanup-summary]").textContent = settings.enabled
    ? `Auto Cleanup on: ${METHODS[settings.method](settings)}`
    : "Auto Cleanup off";
}

const number = (control) => (control.value === "" ? null : Number(control.value));

async function openCleanup(opener) {
  const dialog = $("#cleanup-dialog");
  const form = $("#cleanup-form");
  const field = (name) => form.elements.namedItem(name);
  let settings;
  try {
    settings = await api.get(`/${table}/cleanup`);
  } catch (error) {
    problem(error);
    return;
  }
  summarize(settings);
  field("enabled").checked = settings.enabled;
  field("method").value = settings.method;
  field("max_rows").value = String(settings.max_rows);
  const unit = UNITS.find((u) => settings.max_age_s % u === 0 && settings.max_age_s >= u) ?? 1;
  field("age_unit").value = String(unit);
  field("max_age_s").value = String(settings.max_age_s / unit);
  field("cleanup_amount").value = String(settings.cleanup_amount);
  $("[data-read-only]", form).hidden = can("admin");
  openDialog(dialog, opener);
}

function setUpCleanup() {
  const form = $("#cleanup-form");
  const field = (name) => form.elements.namedItem(name);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const maxAge = number(field("max_age_s"));
    const body = {
      enabled: field("enabled").checked,
      method: field("method").value,
      max_rows: number(field("max_rows")),
      max_age_s: maxAge === null ? null : maxAge * Number(field("age_unit").value),
      cleanup_amount: number(field("cleanup_amount")),
    };
    const saved = await submitting(form, () => api.put(`/${table}/cleanup`, body));
    if (!saved) return;
    summarize(saved);
    $("#cleanup-dialog").close();
    notify(`Auto Cleanup of ${title} saved.`);
  });
  $("[data-action=cleanup]").addEventListener("click", (event) => openCleanup(event.currentTarget));
  api.get(`/${table}/cleanup`).then(summarize, () => {});
}

if (start()) {
  view = new ListView({
    path: `/${table}`,
    root: $(".list"),
    row,
    empty: table === "failed" ? "No failed runs." : "No executed runs.",
    rendered: (items) => selection.rendered(items),
  });
  selection.attach(view);
  view.start();
  setUpCleanup();
}
