// The Queue page: runs waiting, dispatched or running, with when each will start; Remove
// and Execute Now of a waiting run, Cancel of a dispatched or running one, Remove of many
// waiting runs at once (operator); the interval between two runs of a lane (admin).

import { api, can } from "./api.js";
import { Selection } from "./bulk.js";
import { confirmAction, submitting } from "./dialogs.js";
import { $, badge, clip, countdown, h, ticks, time } from "./dom.js";
import { ListView } from "./live.js";
import { act, notify, start } from "./shell.js";

let view;

// Remove applies to waiting runs only, as its single-row button: only they can be selected.
const selection = new Selection({
  root: $(".list"),
  noun: "queued run",
  selectable: (run) => run.state === "queued",
  actions: {
    remove: {
      method: "POST",
      path: "/queue/remove",
      verb: "remove",
      confirm: "Remove runs",
      note: "They will never execute; a run already dispatched or running is left alone.",
      done: "removed",
      left: "no longer queued",
    },
  },
});

/** When a run will start, and what its job's flow control does to it. */
function starts(run) {
  const when = startsAt(run);
  if (!run.absorbed) return when;
  const events = run.absorbed === 1 ? "1 earlier event" : `${run.absorbed} earlier events`;
  return h("span", {}, when, h("span", { class: "muted" }, ` (debounced: ${events})`));
}

/** When a run will start: a countdown for a waiting run, a clock for a running one. */
function startsAt(run) {
  if (run.state === "running") {
    return run.started_at ? countdown(run.started_at, { since: true, prefix: "running for " }) : "running";
  }
  if (run.state === "dispatched") return h("span", {}, "dispatched ", time(run.dispatched_at));
  if (run.paused) return h("span", {}, badge("paused"), h("span", { class: "muted" }, " until its job is resumed"));
  if (run.held) return h("span", { class: "muted" }, "held by its job's concurrency limit");
  if (run.execute_now) return h("span", {}, "next (Execute Now)");
  if (run.not_before) {
    return countdown(run.not_before, { prefix: run.attempt > 1 ? "retry in " : "in " });
  }
  return h("span", { class: "muted" }, "after the earlier runs of its lane");
}

async function remove(run, opener) {
  const sure = await confirmAction({
    title: `Remove run ${run.id}?`,
    message: `Run ${run.id} of ${run.job} will never execute; its lane moves on to the next run.`,
    confirm: "Remove run",
    opener,
  });
  if (!sure) return;
  await act(() => api.delete(`/queue/${run.id}`), `Run ${run.id} removed.`);
  view.refresh();
}

async function cancel(run, opener) {
  const sure = await confirmAction({
    title: `Cancel run ${run.id}?`,
    message: `Run ${run.id} of ${run.job} ends in Failed now and its lane moves on; its script ` +
      "gets SIGTERM, and SIGKILL if it is still running after its job's grace.",
    confirm: "Cancel the run",
    opener,
  });
  if (!sure) return;
  await act(() => api.post(`/queue/${run.id}/cancel`), `Run ${run.id} cancelled.`);
  view.refresh();
}

async function executeNow(run) {
  await act(
    () => api.post(`/queue/${run.id}/execute-now`),
    `Run ${run.id} runs next, without waiting for the interval.`,
  );
  view.refresh();
}

function actions(run) {
  if (!can("operator")) return [];
  if (run.state !== "queued") {
    return [
      h(
        "button",
        {
          type: "button",
          class: "danger",
          dataset: { action: "cancel" },
          "aria-label": `Cancel run ${run.id}`,
          onclick: (event) => cancel(run, event.currentTarget),
        },
        "Cancel run",
      ),
    ];
  }
  return [
    h(
      "button",
      {
        type: "button",
        class: "danger",
        dataset: { action: "remove" },
        "aria-label": `Remove run ${run.id}`,
        onclick: (event) => remove(run, event.currentTarget),
      },
      "Remove",
    ),
    h(
      "button",
      {
        type: "button",
        dataset: { action: "execute-now" },
        "aria-label": `Execute Now: run ${run.id}`,
        onclick: () => executeNow(run),
      },
      "Execute Now",
    ),
  ];
}

/** The lane and the run's place in it: 1 is the run the lane runs now or next. */
function lane(run) {
  if (run.lane === null) return h("span", { class: "muted" }, "none");
  const place = run.position === null ? null : h(
    "span",
    { class: "position", title: `number ${run.position} in its lane's order` },
    `#${run.position}`,
  );
  return [h("code", {}, run.lane), place ? " " : null, place];
}

function row(run) {
  const retrying = run.state === "queued" && run.attempt > 1;
  return h(
    "tr",
    { class: retrying ? "retrying" : undefined },
    h(
      "th",
      { scope: "row" },
      selection.box(run),
      h("a", { href: `/runs/${run.id}`, "aria-label": `Run ${run.id}` }, String(run.id)),
    ),
    h("td", { class: "job" }, run.job),
    h("td", { class: "lane" }, lane(run)),
    h("td", {}, badge(run.state)),
    h("td", { class: "command" }, clip(run.command, 200)),
    h("td", { class: "starts" }, starts(run)),
    h("td", {}, `${run.attempt} of ${run.max_attempts}`),
    // Its first lines (the stylesheet cuts it), the whole of it in the tooltip.
    h("td", { class: "feedback" }, run.feedback ? h("span", { title: run.feedback }, run.feedback) : ""),
    h("td", { class: "actions" }, h("div", { class: "buttons-row" }, actions(run))),
  );
}

async function interval() {
  const form = $("#interval-form");
  const input = form.elements.namedItem("interval_s");
  input.value = String((await api.get("/settings/queue")).interval_s);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value === "" ? null : Number(input.value);
    const saved = await submitting(form, () => api.put("/settings/queue", { interval_s: value }));
    if (saved) notify(`Interval saved: ${saved.interval_s} s between two runs of a lane.`);
  });
}

if (start()) {
  view = new ListView({
    path: "/queue",
    root: $(".list"),
    row,
    empty: "No run is waiting or running.",
    rendered: (items) => selection.rendered(items),
  });
  selection.attach(view);
  view.start();
  ticks();
  interval().catch((error) => notify(`The interval could not be read: ${error.message}`));
}
