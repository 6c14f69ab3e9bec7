// Times as how long ago they were ("3 min ago"), the exact time in the tooltip, for the
// pages where the age matters more than the clock: when an event came in, when an executor
// last reported, when a key was last used. They stay current while the page is open, also
// in rows a live list keeps as they are (it only replaces rows whose data changed).

import { $$, h } from "./dom.js";

const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** Seconds since something as words: "just now", "42 s ago", "3 min ago", "5 h ago". */
export function agoText(seconds) {
  // A time a little ahead of the browser's clock (the server's clock differs) is now too.
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  const days = Math.floor(seconds / 86400);
  return `${days} day${days === 1 ? "" : "s"} ago`;
}

/** Seconds from `iso` to now, by the browser's clock. */
export const secondsSince = (iso) => (Date.now() - Date.parse(iso)) / 1000;

function update(element) {
  element.textContent = agoText(secondsSince(element.dateTime));
}

let ticking = null;

/** A <time> saying how long ago `iso` was (or `never`, muted, without one). */
export function ago(iso, never = "—") {
  if (!iso) return h("span", { class: "muted" }, never);
  const element = h("time", { datetime: iso, title: exact.format(new Date(iso)), dataset: { ago: "" } });
  update(element);
  ticking ??= setInterval(() => $$("time[data-ago]").forEach(update), 1000);
  return element;
}
