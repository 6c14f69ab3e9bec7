// Building the page from data without innerHTML (nothing from the API is ever parsed as
// HTML), and formatting times, durations and results the way the tables show them.

/** An element: h("button", {type: "button", class: "x", onclick: f}, "text", child...). */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

export const RESULT = { 2: "Failed", 3: "Succeeded" };

const sameDay = (a, b) => a.toDateString() === b.toDateString();
const timeOnly = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** A timestamp as a <time> element: the time of day today, else date and time. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const when = new Date(iso);
  const text = sameDay(when, new Date()) ? timeOnly.format(when) : dateTime.format(when);
  return h("time", { datetime: iso, title: dateTime.format(when) }, text);
}

/** A measured duration: "850 ms", "4.2 s", "3:07" or "1:02:03". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return clock(seconds);
}

/** Whole seconds for countdowns: "42 s", "3:07" or "1:02:03". */
export function clock(seconds) {
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  const [hours, minutes, secs] = [Math.floor(whole / 3600), Math.floor(whole / 60) % 60, whole % 60];
  const two = (n) => String(n).padStart(2, "0");
  return hours ? `${hours}:${two(minutes)}:${two(secs)}` : `${minutes}:${two(secs)}`;
}

/** A live countdown to `iso` (or a clock since it, with `since`): ticks() keeps it current. */
export function countdown(iso, { prefix = "in ", since = false, due = "due now" } = {}) {
  const element = h("time", { datetime: iso, dataset: { tick: since ? "since" : "until", prefix, due } });
  tickOne(element);
  return element;
}

function tickOne(element) {
  const delta = (new Date(element.dateTime) - Date.now()) / 1000;
  const { tick, prefix, due } = element.dataset;
  if (tick === "since") element.textContent = `${prefix}${clock(Math.max(0, -delta))}`;
  else element.textContent = delta > 0.5 ? `${prefix}${clock(Math.ceil(delta))}` : due;
}

let ticking = null;
/** Update every countdown on the page once a second. */
export function ticks() {
  ticking ??= setInterval(() => $$("time[data-tick]").forEach(tickOne), 1000);
}

/** A state or result as a badge. */
export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

/** Text cut to `length` characters, the whole of it in the tooltip. */
export function clip(text, length = 80) {
  if (!text) return h("span", { class: "muted" }, "—");
  if (text.length <= length) return h("span", {}, text);
  return h("span", { title: text }, `${text.slice(0, length - 1)}…`);
}

/** A datetime-local input's value as an ISO timestamp in UTC ("" stays ""). */
export function localToIso(value) {
  return value ? new Date(value).toISOString() : "";
}
