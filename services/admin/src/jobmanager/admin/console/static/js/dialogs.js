// Modal dialogs (<dialog> with showModal: focus is trapped, Escape closes) and forms that
// show the API's own validation messages next to the fields they concern.

import { ApiError } from "./api.js";
import { $, $$, h } from "./dom.js";

/** Open `dialog` for `opener`. When it closes, focus returns to the opener, or, if a live
 *  update replaced the opener's row meanwhile, to the same button of the new row. */
export function openDialog(dialog, opener) {
  const row = opener?.closest("tr[data-key]")?.dataset.key;
  const action = opener?.dataset.action;
  for (const form of $$("form", dialog)) clearErrors(form);
  dialog.addEventListener(
    "close",
    () => {
      let target = opener;
      if (!target?.isConnected && row && action) {
        target = $(`tr[data-key="${CSS.escape(row)}"] [data-action="${CSS.escape(action)}"]`);
      }
      (target?.isConnected ? target : $("#main"))?.focus();
    },
    { once: true },
  );
  dialog.showModal();
}

/** Ask before something that cannot be undone; resolves to true when confirmed. */
export function confirmAction({ title, message, confirm, opener }) {
  const dialog = $("#confirm");
  $("[data-title]", dialog).textContent = title;
  $("[data-message]", dialog).textContent = message;
  $("[data-confirm]", dialog).textContent = confirm;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), {
      once: true,
    });
    openDialog(dialog, opener);
  });
}

export function clearErrors(form) {
  for (const element of $$("[aria-invalid]", form)) {
    element.removeAttribute("aria-invalid");
    const ids = (element.getAttribute("aria-describedby") || "").split(" ");
    const kept = ids.filter((id) => id && !id.startsWith("error-"));
    if (kept.length) element.setAttribute("aria-describedby", kept.join(" "));
    else element.removeAttribute("aria-describedby");
  }
  for (const element of $$(".field-error", form)) element.remove();
  const summary = $("[data-errors]", form);
  if (summary) summary.replaceChildren();
}

/** The control an error's location points at: the deepest named one that exists
 *  (["body", "trigger", "conditions", 0, "value"] → "trigger.conditions.0.value"). */
function controlFor(form, location) {
  const path = (location[0] === "body" ? location.slice(1) : location).map(String);
  for (let n = path.length; n > 0; n -= 1) {
    const found = form.elements.namedItem(path.slice(0, n).join("."));
    if (found) return found instanceof RadioNodeList ? found[0] : found;
  }
  return null;
}

let errorIds = 0;
function markField(control, message) {
  const id = `error-${(errorIds += 1)}`;
  const note = h("span", { class: "field-error", id }, message);
  const field = control.closest(".field") || control;
  field.append(note);
  control.setAttribute("aria-invalid", "true");
  const described = control.getAttribute("aria-describedby");
  control.setAttribute("aria-describedby", described ? `${described} ${id}` : id);
}

/** Show an API error on a form: its detail above the buttons, and each field error
 *  (422 `errors`, in words: their `message`; or a detail that starts with a field's name)
 *  next to its field. */
export function showErrors(form, error) {
  clearErrors(form);
  const summary = $("[data-errors]", form);
  const detail = error instanceof ApiError ? error.detail : String(error?.message ?? error);
  const fieldErrors =
    error instanceof ApiError && error.errors.length
      ? error.errors.map((e) => ({ loc: e.loc || [], msg: e.message ?? e.msg }))
      : [];
  if (!fieldErrors.length) {
    const prefix = /^([\w.]+): (.*)$/s.exec(detail);
    if (prefix) fieldErrors.push({ loc: prefix[1].split("."), msg: prefix[2] });
  }
  let first = null;
  const unplaced = [];
  for (const { loc, msg } of fieldErrors) {
    const control = controlFor(form, loc);
    const text = String(msg).replace(/^Value error, /, "");
    if (control && control.type !== "hidden") {
      markField(control, text);
      first ??= control;
    } else {
      unplaced.push(`${loc.filter((p) => p !== "body").join(".")}: ${text}`);
    }
  }
  if (summary) {
    const placed = fieldErrors.length - unplaced.length;
    let lead = error?.status === 403 ? `Not allowed: ${detail}` : detail;
    if (placed) lead = placed === 1 ? "Check the highlighted field." : `Check the ${placed} highlighted fields.`;
    if (placed && unplaced.length === 1) lead += ` ${unplaced[0]}`;
    else if (!placed && unplaced.length === 1) lead = unplaced[0];
    summary.append(h("p", {}, lead));
    if (unplaced.length > 1) summary.append(h("ul", {}, unplaced.map((t) => h("li", {}, t))));
  }
  (first && typeof first.focus === "function" ? first : null)?.focus();
}

/** Submit `form` through `work` (an API call), once at a time (the button keeps its focus);
 *  errors are shown on the form. Resolves to the result, or undefined after an error. */
export async function submitting(form, work) {
  if (form.getAttribute("aria-busy") === "true") return undefined;
  form.setAttribute("aria-busy", "true");
  clearErrors(form);
  try {
    return await work();
  } catch (error) {
    showErrors(form, error);
    return undefined;
  } finally {
    form.removeAttribute("aria-busy");
  }
}
