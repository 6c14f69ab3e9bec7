// The Events page: the Channel Manager notifications recorded lately (GET /events), what
// each matched and the runs it caused, one event's payload in a dialog; and the dead letters
// (GET /stats), the messages that never became an event.

import { ago } from "./ago.js";
import { api } from "./api.js";
import { openDialog } from "./dialogs.js";
import { $, badge, clip, h, time } from "./dom.js";
import { ListView } from "./live.js";
import { every, start } from "./shell.js";

// A busy event can cause many runs; the row names the first few, the rest as a number.
const RUNS_SHOWN = 4;

function runs(event) {
  if (!event.matched && !event.runs.length) return h("span", { class: "muted" }, "no job");
  const items = event.runs.slice(0, RUNS_SHOWN).map((run) =>
    h(
      "li",
      {},
      h("a", { href: `/runs/${run.id}`, "aria-label": `Run ${run.id}` }, String(run.id)),
      " ",
      h("span", { class: "job" }, run.job),
      " ",
      badge(run.state),
    ),
  );
  const more = event.runs.length - RUNS_SHOWN;
  if (more > 0) items.push(h("li", { class: "muted" }, `and ${more} more`));
  // Runs deleted from Executed or Failed since are no longer listed: say so.
  const gone = event.matched - event.runs.length;
  const count = `${event.matched} job${event.matched === 1 ? "" : "s"}`;
  return [
    h("div", {}, count, gone > 0 ? h("span", { class: "muted" }, ` (${gone} run${gone === 1 ? "" : "s"} no longer kept)`) : null),
    h("ul", { class: "event-runs" }, items),
  ];
}

function item(term, ...value) {
  return [h("dt", {}, term), h("dd", {}, ...value)];
}

/** The event in its dialog. Its payload (the event's data) is shown as text, whatever it holds: never as HTML. */
function showEvent(event, opener) {
  const dialog = $("#event-dialog");
  $("[data-event-id]", dialog).textContent = event.event_id;
  $("[data-event-summary]", dialog).replaceChildren(
    ...item("Type", h("code", {}, event.event_type)),
    ...item("Source", event.source),
    ...item("Occurred", time(event.occurred_at)),
    ...item("Received", time(event.received_at)),
    ...item("Matched", `${event.matched} job${event.matched === 1 ? "" : "s"}`),
  );
  $("[data-payload]", dialog).textContent = JSON.stringify(event.data, null, 2);
  openDialog(dialog, opener);
}

function row(event) {
  return h(
    "tr",
    {},
    h("th", { scope: "row", class: "event-id" }, h("code", {}, clip(event.event_id, 40))),
    h("td", {}, ago(event.received_at)),
    h("td", {}, h("code", {}, event.event_type)),
    h("td", {}, event.source),
    h("td", { class: "event-matched" }, runs(event)),
    h(
      "td",
      { class: "actions" },
      h(
        "button",
        {
          type: "button",
          dataset: { action: "payload" },
          "aria-label": `Payload of event ${event.event_id}`,
          onclick: (click) => showEvent(event, click.currentTarget),
        },
        "Payload",
      ),
    ),
  );
}

async function deadLetters() {
  const { dead_letters: count } = await api.get("/stats");
  const shown = $("[data-dead-count]");
  shown.textContent = count === null ? "?" : String(count);
  shown.title = count === null ? "the broker is not reachable now" : "";
}

if (start()) {
  new ListView({ path: "/events", root: $(".list"), row, empty: "No events recorded." }).start();
  every(5000, deadLetters);
}
