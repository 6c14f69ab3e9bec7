// The dialog that replays recorded events into a job (admin): first a dry run that counts
// what the window holds, then, confirmed, the replay itself with what it queued. An event
// makes one run of a job, ever: replaying a window again queues nothing new.

import { api } from "./api.js";
import { openDialog, submitting } from "./dialogs.js";
import { $, h, localToIso, time } from "./dom.js";
import { notify } from "./shell.js";

const dialog = $("#replay-dialog");
const form = $("#replay-form");
const result = $("[data-replay-result]", form);
const submit = $("[data-submit]", form);
const field = (name) => form.elements.namedItem(name);
let job = null;
let counted = null; // the window of the dry run shown, which the confirmation replays

const n = (count) => count.toLocaleString();
const runs = (count) => (count === 1 ? "1 run" : `${n(count)} runs`);

/** A datetime-local value (in the browser's time zone) for `date`. */
function localValue(date) {
  const two = (v) => String(v).padStart(2, "0");
  const day = `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())}`;
  return `${day}T${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

function windowBody() {
  const body = { since: localToIso(field("since").value) || undefined };
  const until = localToIso(field("until").value);
  if (until) body.until = until;
  return body;
}

function more(outcome) {
  if (!outcome.more) return null;
  return h(
    "p",
    { class: "more" },
    "The window holds more events than one call takes, from ",
    time(outcome.next_since),
    " on. ",
    h("button", { type: "button", dataset: { action: "go-on" }, onclick: () => goOn(outcome.next_since) }, "Go on from there"),
  );
}

function showCount(outcome) {
  const ran = outcome.skipped;
  result.replaceChildren(
    h(
      "p",
      { class: "verdict" },
      `${n(outcome.matched)} of ${n(outcome.scanned)} events in the window match; `,
      `${n(outcome.enqueued)} would run, ${n(ran)} already ran.`,
    ),
    ...[more(outcome)].filter(Boolean),
  );
  counted = outcome.enqueued > 0 ? windowBody() : null;
  submit.textContent = counted ? `Replay ${outcome.enqueued === 1 ? "1 event" : `${n(outcome.enqueued)} events`}` : "Count matching events";
}

function showDone(outcome) {
  const lines = [
    h("p", { class: "verdict pass" }, `Replayed: ${runs(outcome.enqueued)} queued, ${n(outcome.skipped)} already ran.`),
    h("p", {}, `${n(outcome.matched)} of ${n(outcome.scanned)} events in the window matched.`),
  ];
  if (outcome.crashed) {
    lines.push(h("p", { class: "fail" }, `${n(outcome.crashed)} events crashed the template renderer and got no run.`));
  }
  result.replaceChildren(...lines, ...[more(outcome)].filter(Boolean));
  counted = null;
  submit.textContent = "Count matching events";
  notify(`Job ${job.name}: ${runs(outcome.enqueued)} queued by a replay.`);
}

function goOn(nextSince) {
  field("since").value = localValue(new Date(nextSince));
  reset();
  form.requestSubmit();
}

function reset() {
  counted = null;
  result.replaceChildren();
  submit.textContent = "Count matching events";
}

/** Wire the dialog; returns open(job, opener). */
export function setUpJobReplay() {
  for (const name of ["since", "until"]) field(name).addEventListener("input", reset);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = counted ?? { ...windowBody(), dry_run: true };
    const outcome = await submitting(form, () => api.post(`/jobs/${job.id}/replay`, body));
    if (!outcome) return;
    if (outcome.dry_run) showCount(outcome);
    else showDone(outcome);
  });
  return (which, opener) => {
    job = which;
    form.reset();
    reset();
    $("[data-job-name]", dialog).textContent = which.name;
    field("since").value = localValue(new Date(Date.now() - 3600 * 1000));
    openDialog(dialog, opener);
    field("since").focus();
  };
}
