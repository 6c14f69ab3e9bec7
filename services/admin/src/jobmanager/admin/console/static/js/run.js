// A run's detail: its summary, every attempt with its Result and Feedback, the output
// tail, and the event that caused it; the actions its state allows, for the role.

import { ApiError, api, can } from "./api.js";
import { confirmAction } from "./dialogs.js";
import { $, RESULT, badge, countdown, duration, h, ticks, time } from "./dom.js";
import { act, every, start } from "./shell.js";

const id = document.body.dataset.run;
const HOME = {
  queued: ["/queue", "Queue"],
  dispatched: ["/queue", "Queue"],
  running: ["/queue", "Queue"],
  succeeded: ["/executed", "Executed Jobs"],
  failed: ["/failed", "Failed Jobs"],
  removed: ["/queue", "Queue"],
};
let shown = null;
let refresh = () => {};

function button(label, action, onclick, extra = {}) {
  return h("button", { type: "button", dataset: { action }, onclick, ...extra }, label);
}

const confirmed = (title, message, confirm, opener) =>
  confirmAction({ title, message, confirm, opener });

function actions(run) {
  const buttons = [];
  if (run.state === "queued" && can("operator")) {
    buttons.push(
      button("Execute Now", "execute-now", async () => {
        await act(() => api.post(`/queue/${id}/execute-now`), `Run ${id} runs next.`);
        refresh();
      }),
      button("Remove", "remove", async (event) => {
        const message = "It will never execute; its lane moves on to the next run.";
        if (!(await confirmed(`Remove run ${id}?`, message, "Remove run", event.currentTarget))) return;
        await act(() => api.delete(`/queue/${id}`), `Run ${id} removed.`);
        refresh();
      }, { class: "danger" }),
    );
  }
  if (run.state === "failed" && can("operator")) {
    buttons.push(
      button("Execute", "execute", async () => {
        await act(() => api.post(`/failed/${id}/execute`), `Run ${id} is executing again.`);
        refresh();
      }),
    );
  }
  if ((run.state === "succeeded" || run.state === "failed") && can("admin")) {
    const table = run.state === "succeeded" ? "executed" : "failed";
    buttons.push(
      button("Delete", "delete", async (event) => {
        const message = `The row of run ${id} is deleted for good.`;
        if (!(await confirmed(`Delete run ${id}?`, message, "Delete row", event.currentTarget))) return;
        const done = await act(() => api.delete(`/${table}/${id}`).then(() => true));
        if (done) location.assign(`/${table}`);
      }, { class: "danger" }),
    );
  }
  return buttons;
}

function item(term, ...value) {
  return [h("dt", {}, term), h("dd", {}, ...value)];
}

/** The Attempt line: which attempt this is, or, for a removed run, how many it had. */
function attempts(run) {
  if (run.state !== "removed") return `${run.attempt} of ${run.max_attempts}`;
  const ran = run.attempts.length;
  if (ran === 0) return "none: removed before its first attempt";
  return `removed after ${ran} of ${run.max_attempts} attempt${ran === 1 ? "" : "s"}`;
}

function summary(run) {
  const starts = run.state === "queued" && run.not_before ? countdown(run.not_before) : null;
  const removed = run.state === "removed";
  return [
    item("Job", run.job, " ", h("a", { href: `/jobs?q=${encodeURIComponent(run.job)}` }, "(see the job)")),
    item("Script", h("code", {}, run.script)),
    item("Lane", run.lane === null ? "none" : h("code", {}, run.lane)),
    item("State", badge(run.state), run.execute_now ? " (Execute Now)" : "", removed ? " by an operator: it will never execute" : ""),
    item("Attempt", attempts(run)),
    item("Command", h("pre", {}, run.command)),
    item("Enqueued", time(run.enqueued_at)),
    starts ? item("Starts", starts) : [],
    item("Started", time(run.started_at)),
    // A removed run's finish is its removal; it ran for no time of its own.
    item(removed ? "Removed" : "Finished", time(run.finished_at)),
    item("Duration", removed ? "—" : duration(run.duration_s)),
    item("Result", run.result ? `${run.result} ${RESULT[run.result]}` : "—"),
    item("Feedback", run.feedback ? h("span", { class: run.result === 2 ? "fail" : "" }, run.feedback) : "—"),
    item("Executor", run.executor ?? "—"),
    item("Event", run.event_id ? h("code", {}, run.event_id) : "—"),
    // Debounce: the run that replaced this one, or the earlier events this one absorbed.
    run.superseded_by
      ? item("Superseded by", h("a", { href: `/runs/${run.superseded_by}` }, `run ${run.superseded_by}`),
          " (a later event for its lane replaced it before it was dispatched)")
      : [],
    run.absorbed_events && run.absorbed_events.length
      ? item("Absorbed events", ...run.absorbed_events.flatMap((id, i) => [i ? ", " : "", h("code", {}, id)]))
      : [],
    run.held ? item("Held", "waiting for a slot of its job's concurrency limit") : [],
    // Cancel on a later event: the event that removed or cancelled it.
    run.ended_by_event
      ? item(removed ? "Removed by event" : "Cancelled by event",
          h("code", {}, run.ended_by_event.event_id ?? `#${run.ended_by_event.id} (expired)`),
          run.ended_by_event.event_type ? ` (${run.ended_by_event.event_type})` : "")
      : [],
  ].flat();
}

function attempt(a) {
  const output = a.output_tail
    ? h("details", {}, h("summary", {}, "Output"), h("pre", { class: "output" }, a.output_tail))
    : null;
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, String(a.attempt)),
    h("td", {}, time(a.dispatched_at)),
    h("td", {}, time(a.started_at)),
    h("td", {}, time(a.finished_at)),
    h("td", {}, duration(a.duration_s)),
    h("td", {}, a.result ? badge(`${a.result} ${RESULT[a.result]}`, a.result === 3 ? "succeeded" : "failed") : "—"),
    h("td", { class: "feedback" }, a.feedback || "", output),
    h("td", {}, a.executor ?? "—"),
  );
}

function render(run) {
  const [home, label] = HOME[run.state];
  const back = $("[data-back]");
  back.href = home;
  back.textContent = label;
  $("[data-job]").textContent = `· ${run.job}`;
  $("[data-state]").replaceChildren(badge(run.state));
  $("[data-actions]").replaceChildren(...actions(run));
  $("[data-summary]").replaceChildren(...summary(run));
  const rows = run.attempts.map(attempt);
  const never = run.state === "removed" ? "Removed before it was dispatched: it never ran." : "Not dispatched yet.";
  const none = h("tr", { class: "empty" }, h("td", { colspan: 8 }, never));
  $("[data-attempts]").replaceChildren(...(rows.length ? rows : [none]));
  $("[data-output]").textContent = run.output_tail || "(no output)";
  $("[data-event]").textContent = run.event
    ? JSON.stringify(run.event, null, 2)
    : "(the event is no longer recorded)";
}

async function load() {
  try {
    const run = await api.get(`/runs/${id}`);
    const signature = JSON.stringify(run);
    if (signature !== shown) {
      const focused = document.activeElement?.dataset?.action;
      render(run);
      shown = signature;
      if (focused) $(`[data-action="${focused}"]`)?.focus();
    }
    $("[data-status]").textContent = "";
  } catch (error) {
    const gone = error instanceof ApiError && error.status === 404;
    $("[data-status]").textContent = gone ? `Run ${id} does not exist (any more).` : `Not up to date: ${error.message}`;
  }
}

if (start()) {
  refresh = every(2000, load);
  ticks();
}
