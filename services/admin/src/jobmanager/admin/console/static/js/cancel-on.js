// The job dialog's "Cancel on a later event" rows: each a trigger (event type, conditions as
// JSON) whose events end the job's waiting runs in the event's lane, and with "running" the
// one on an executor too. Controls are named cancel_on.N.event_type, ... as the API's error
// locations are, so that its messages land next to them.

import { ApiError } from "./api.js";
import { $, $$, h } from "./dom.js";

const list = $("[data-cancel-on]");
const control = (name) => list.closest("form").elements.namedItem(name);

function conditionsText(conditions) {
  if (typeof conditions === "string") return conditions; // as typed, not (yet) JSON
  return conditions?.length ? JSON.stringify(conditions) : "";
}

function row(index, trigger) {
  const name = (part) => `cancel_on.${index}.${part}`;
  const id = (part) => `cancel-on-${index}-${part}`;
  return h(
    "li",
    {},
    h(
      "fieldset",
      { class: "cancel-trigger", name: `cancel_on.${index}` },
      h("legend", { class: "visually-hidden" }, `Cancel trigger ${index + 1}`),
      h(
        "div",
        { class: "field" },
        h("label", { for: id("event-type") }, "Cancelling event type"),
        h("input", {
          id: id("event-type"),
          name: name("event_type"),
          value: trigger.event_type ?? "",
          autocomplete: "off",
          spellcheck: "false",
          placeholder: "channel.removed",
        }),
      ),
      h(
        "div",
        { class: "field" },
        h("label", { for: id("conditions") }, "Its conditions (JSON)"),
        h("textarea", {
          id: id("conditions"),
          name: name("conditions"),
          rows: 1,
          spellcheck: "false",
          placeholder: '[{"path": "data.channel.origin", "op": "eq", "value": "avcm"}]',
        }, conditionsText(trigger.conditions)),
      ),
      h(
        "div",
        { class: "field check" },
        h("input", { id: id("running"), name: name("running"), type: "checkbox", checked: Boolean(trigger.running) }),
        h("label", { for: id("running") }, "Stop the running one too"),
      ),
      h(
        "button",
        {
          type: "button",
          class: "quiet",
          "aria-label": `Remove cancel trigger ${index + 1}`,
          onclick: () => remove(index),
        },
        "Remove",
      ),
    ),
  );
}

/** The rows as the API takes them; a conditions text that is not a JSON list is a 422 of
 *  the console's own, placed on its field. */
export function readCancelOn() {
  return $$("fieldset.cancel-trigger", list).map((_, index) => {
    const text = control(`cancel_on.${index}.conditions`).value.trim();
    let conditions = [];
    if (text) {
      try {
        conditions = JSON.parse(text);
      } catch (error) {
        const loc = ["body", "cancel_on", index, "conditions"];
        const msg = `cancel_on.${index}.conditions: not valid JSON (${error.message})`;
        throw new ApiError(422, { detail: msg, errors: [{ loc, msg }] });
      }
    }
    return {
      event_type: control(`cancel_on.${index}.event_type`).value.trim(),
      conditions,
      scope: "lane",
      running: control(`cancel_on.${index}.running`).checked,
    };
  });
}

/** Show `triggers` (a job's cancel_on) as rows. */
export function showCancelOn(triggers) {
  list.replaceChildren(...triggers.map((t, index) => row(index, t)));
}

function remove(index) {
  const triggers = readRaw();
  triggers.splice(index, 1);
  showCancelOn(triggers);
  const next = control(`cancel_on.${Math.min(index, triggers.length - 1)}.event_type`);
  (next || $("[data-add-cancel]")).focus();
}

/** The rows as typed (conditions kept as text), to redraw them after a change. */
function readRaw() {
  return $$("fieldset.cancel-trigger", list).map((_, index) => {
    const text = control(`cancel_on.${index}.conditions`).value;
    let conditions;
    try {
      conditions = text.trim() ? JSON.parse(text) : [];
    } catch {
      conditions = text;
    }
    return {
      event_type: control(`cancel_on.${index}.event_type`).value,
      conditions,
      running: control(`cancel_on.${index}.running`).checked,
    };
  });
}

/** Wire the "Add cancel trigger" button. */
export function setUpCancelOn() {
  $("[data-add-cancel]").addEventListener("click", () => {
    const triggers = readRaw();
    triggers.push({ event_type: "", conditions: [], running: false });
    showCancelOn(triggers);
    control(`cancel_on.${triggers.length - 1}.event_type`).focus();
  });
}
