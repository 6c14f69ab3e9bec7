// The Audit log page (GET /audit): every mutating call, newest first, with who made it
// (the key's name), the action, its target and how it ended. A name in a row filters by it.

import { ago } from "./ago.js";
import { $, badge, clip, h } from "./dom.js";
import { ListView } from "./live.js";
import { start } from "./shell.js";

// ok: done; refused: the action itself said no (404, 409, 422), nothing changed; denied:
// the key may not do it (401, 403), so it never ran.
const OUTCOME = { ok: "succeeded", refused: "queued", denied: "failed" };

let view;

/** A value of the row that, clicked, becomes the filter of its column. */
function filterBy(name, value) {
  return h(
    "button",
    {
      type: "button",
      class: "link",
      dataset: { action: `filter-${name}` },
      title: `Show only the rows with this ${name === "actor" ? "caller" : name}`,
      onclick: () => {
        view.form.elements.namedItem(name).value = value;
        view.form.requestSubmit();
      },
    },
    value,
  );
}

function detail(entry) {
  const text = Object.keys(entry.detail).length ? JSON.stringify(entry.detail) : "";
  return clip(text, 100);
}

function row(entry) {
  return h(
    "tr",
    {},
    h("th", { scope: "row", class: "when" }, ago(entry.at)),
    h("td", { class: "actor" }, filterBy("actor", entry.actor)),
    h("td", { class: "action" }, filterBy("action", entry.action)),
    h("td", { class: "target" }, h("code", {}, entry.target)),
    h("td", {}, badge(entry.outcome, OUTCOME[entry.outcome] ?? entry.outcome)),
    h("td", { class: "detail" }, detail(entry)),
  );
}

if (start()) {
  view = new ListView({ path: "/audit", root: $(".list"), row, empty: "No audit entries match." }).start();
}
