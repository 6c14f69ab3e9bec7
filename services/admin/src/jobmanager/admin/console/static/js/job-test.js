// The dialog that dry-runs a job against a recorded or pasted event: whether it would match,
// each condition's verdict, and the command and lane it would render. Nothing is queued.

import { ApiError, api } from "./api.js";
import { openDialog, submitting } from "./dialogs.js";
import { $, h } from "./dom.js";

const dialog = $("#test-dialog");
const form = $("#test-form");
const result = $("[data-test-result]", form);
let job = null;
let describeCondition = (c) => c.path;

function body() {
  const pasted = form.elements.namedItem("event").value.trim();
  if (pasted) {
    try {
      return { event: JSON.parse(pasted) };
    } catch (error) {
      throw new ApiError(422, { detail: `event: not valid JSON (${error.message})` });
    }
  }
  const eventId = form.elements.namedItem("event_id").value;
  return eventId ? { event_id: eventId } : {};
}

function verdict(passed, text) {
  return h("li", { class: passed ? "pass" : "fail" }, h("span", { class: "mark" }, passed ? "✓ " : "✗ "), text);
}

function show(outcome) {
  const checks = outcome.checks.map((c) => verdict(c.passed, `${describeCondition(c)}: ${c.reason}`));
  result.replaceChildren(
    h(
      "p",
      { class: `verdict ${outcome.matched ? "pass" : "fail"}` },
      outcome.matched ? "Matches: the job would run." : "Does not match: the job would not run.",
    ),
    h("ul", { class: "checks" }, verdict(outcome.event_type_ok, `event type: ${outcome.event_type_reason}`), checks),
    h(
      "dl",
      { class: "summary" },
      h("dt", {}, "Command"),
      h("dd", {}, outcome.error ? h("span", { class: "fail" }, outcome.error) : h("pre", {}, outcome.command ?? "")),
      h("dt", {}, "Lane"),
      h("dd", {}, outcome.lane === null ? "none" : h("code", {}, outcome.lane)),
      h("dt", {}, "Event"),
      h("dd", {}, h("code", {}, `${outcome.event.event_type} ${outcome.event.event_id}`)),
    ),
  );
}

async function loadEvents() {
  const select = form.elements.namedItem("event_id");
  const latest = select.options[0];
  try {
    const page = await api.get("/events", { limit: 20 });
    const options = page.items.map((e) =>
      h("option", { value: e.event_id }, `${e.event_type} · ${e.event_id} · ${new Date(e.received_at).toLocaleString()}`),
    );
    select.replaceChildren(latest, ...options);
  } catch {
    select.replaceChildren(latest);
  }
}

/** Wire the dialog; returns open(job, opener). */
export function setUpJobTest(conditionText) {
  describeCondition = conditionText;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren();
    const outcome = await submitting(form, () => api.post(`/jobs/${job.id}/test`, body()));
    if (outcome) show(outcome);
  });
  return async (which, opener) => {
    job = which;
    form.reset();
    result.replaceChildren();
    $("[data-job-name]", dialog).textContent = which.name;
    await loadEvents();
    openDialog(dialog, opener);
  };
}
