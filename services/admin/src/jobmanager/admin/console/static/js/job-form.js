// The dialog that adds or edits a job. The API validates; its messages appear next to the
// fields they concern (a condition's fields are named trigger.conditions.N.path, ... as the
// API's error locations are).

import { api } from "./api.js";
import { readCancelOn, setUpCancelOn, showCancelOn } from "./cancel-on.js";
import { openDialog, submitting } from "./dialogs.js";
import { $, $$, h } from "./dom.js";
import { notify } from "./shell.js";

const OPS = [
  "eq", "ne", "in", "not_in", "contains", "startswith", "endswith", "glob", "regex",
  "exists", "not_exists", "gt", "gte", "lt", "lte",
];
const NO_VALUE = new Set(["exists", "not_exists"]);
const DEFAULT_COMMAND = "{{ event | tojson }}";

const dialog = $("#job-dialog");
const form = $("#job-form");
const OPTIONAL = ["max_concurrency", "pause_after_failures", "debounce_max_s"];
const list = $("[data-conditions]", form);
const field = (name) => form.elements.namedItem(name);
let editing = null;

/** A condition's value as typed: JSON where it parses ("5", "[\"a\"]", "true"), else text. */
function parseValue(text) {
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function showValue(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "string" && parseValue(value) === value) return value;
  return JSON.stringify(value);
}

function conditionRow(index, condition) {
  const name = (part) => `trigger.conditions.${index}.${part}`;
  const id = (part) => `condition-${index}-${part}`;
  const op = h("select", { id: id("op"), name: name("op") }, OPS.map((o) => h("option", { value: o }, o)));
  op.value = condition.op;
  const value = h("input", {
    id: id("value"),
    name: name("value"),
    value: showValue(condition.value),
    autocomplete: "off",
    spellcheck: "false",
    placeholder: 'avcm, 5, ["a", "b"]',
    disabled: NO_VALUE.has(condition.op),
  });
  op.addEventListener("change", () => {
    value.disabled = NO_VALUE.has(op.value);
  });
  return h(
    "li",
    {},
    h(
      "fieldset",
      { class: "condition", name: `trigger.conditions.${index}` },
      h("legend", { class: "visually-hidden" }, `Condition ${index + 1}`),
      h(
        "div",
        { class: "field" },
        h("label", { for: id("path") }, "Path"),
        h("input", {
          id: id("path"),
          name: name("path"),
          value: condition.path,
          autocomplete: "off",
          spellcheck: "false",
          placeholder: "data.channel.origin",
        }),
      ),
      h("div", { class: "field" }, h("label", { for: id("op") }, "Operator"), op),
      h("div", { class: "field" }, h("label", { for: id("value") }, "Value"), value),
      h(
        "button",
        {
          type: "button",
          class: "quiet",
          "aria-label": `Remove condition ${index + 1}`,
          onclick: () => removeCondition(index),
        },
        "Remove",
      ),
    ),
  );
}

function readConditions() {
  return $$("fieldset.condition", list).map((_, index) => {
    const condition = {
      path: field(`trigger.conditions.${index}.path`).value.trim(),
      op: field(`trigger.conditions.${index}.op`).value,
    };
    const value = parseValue(field(`trigger.conditions.${index}.value`).value);
    if (!NO_VALUE.has(condition.op) && value !== undefined) condition.value = value;
    return condition;
  });
}

function showConditions(conditions) {
  list.replaceChildren(...conditions.map((c, index) => conditionRow(index, c)));
}

function removeCondition(index) {
  const conditions = readConditions();
  conditions.splice(index, 1);
  showConditions(conditions);
  const next = field(`trigger.conditions.${Math.min(index, conditions.length - 1)}.path`);
  (next || $("[data-add-condition]", form)).focus();
}

function read() {
  const number = (name) => (field(name).value === "" ? undefined : Number(field(name).value));
  const body = {
    name: field("name").value.trim(),
    description: field("description").value,
    enabled: field("enabled").checked,
    trigger: { event_type: field("trigger.event_type").value.trim(), conditions: readConditions() },
    script: field("script").value.trim(),
    lane: field("no_lane").checked ? null : field("lane").value,
    cancel_on: readCancelOn(),
  };
  const command = field("command_template").value;
  if (command.trim()) body.command_template = command;
  else if (editing) body.command_template = DEFAULT_COMMAND;
  for (const name of ["timeout_s", "cancel_grace_s", "max_attempts", "retry_backoff_s", "debounce_s"]) {
    if (number(name) !== undefined) body[name] = number(name);
  }
  // Flow control's optional limits: an empty field is "none" (null clears it on a save).
  for (const name of OPTIONAL) {
    if (number(name) !== undefined) body[name] = number(name);
    else if (editing) body[name] = null;
  }
  return body;
}

function fill(job) {
  form.reset();
  field("name").value = job?.name ?? "";
  field("description").value = job?.description ?? "";
  field("enabled").checked = job?.enabled ?? true;
  field("trigger.event_type").value = job?.trigger.event_type ?? "";
  field("script").value = job?.script ?? "";
  field("command_template").value = job?.command_template ?? "";
  field("no_lane").checked = job ? job.lane === null : false;
  field("lane").value = job?.lane ?? "default";
  field("lane").disabled = field("no_lane").checked;
  for (const name of ["timeout_s", "cancel_grace_s", "max_attempts", "retry_backoff_s", "debounce_s"]) {
    field(name).value = job ? String(job[name]) : "";
  }
  for (const name of OPTIONAL) {
    field(name).value = job?.[name] ?? "";
  }
  showConditions(job?.trigger.conditions ?? []);
  showCancelOn(job?.cancel_on ?? []);
  const label = job ? `Edit job ${job.name}` : "Add a job";
  $("#job-dialog-title").textContent = label;
  $("[data-submit]", form).textContent = job ? "Save job" : "Add job";
}

async function loadScripts() {
  try {
    const scripts = await api.get("/scripts");
    $("#job-scripts").replaceChildren(...scripts.map((s) => h("option", { value: s.name })));
  } catch {
    // The API names the known scripts when a job's script is not one of them.
  }
}

/** Wire the dialog; returns open(job or null, opener). `saved` runs after a save. */
export function setUpJobForm(saved) {
  $("[data-add-condition]", form).addEventListener("click", () => {
    const conditions = readConditions();
    conditions.push({ path: "", op: "eq" });
    showConditions(conditions);
    field(`trigger.conditions.${conditions.length - 1}.path`).focus();
  });
  setUpCancelOn();
  field("no_lane").addEventListener("change", () => {
    field("lane").disabled = field("no_lane").checked;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const job = await submitting(form, () => {
      const body = read(); // a cancel trigger's conditions that are not JSON: shown as an error
      return editing ? api.patch(`/jobs/${editing.id}`, body) : api.post("/jobs", body);
    });
    if (!job) return;
    const verb = editing ? "saved" : "added";
    dialog.close();
    notify(`Job ${job.name} ${verb}.`);
    saved(job);
  });
  return (job, opener) => {
    editing = job;
    fill(job);
    loadScripts();
    openDialog(dialog, opener);
    field("name").focus();
  };
}
