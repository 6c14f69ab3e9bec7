// What every page of the console shares: the sign-in guard, who is signed in, what the role
// may see, the notices, the table counts in the tabs, and polling while the tab is visible.

import { ApiError, api, can, session, signOut, toSignIn } from "./api.js";
import { $, $$ } from "./dom.js";

/** Start a page: returns the session, or null after sending the operator to sign in. */
export function start() {
  const current = session();
  if (!current) {
    toSignIn();
    return null;
  }
  $("[data-who]").textContent = `${current.name} (${current.role})`;
  $("[data-signed-in]").hidden = false;
  $("[data-sign-out]").addEventListener("click", () => {
    signOut();
    location.assign("/sign-in");
  });
  $("#problem [data-dismiss]").addEventListener("click", clearProblem);
  document.addEventListener("click", (event) => {
    const closer = event.target.closest("[data-close]");
    if (closer) closer.closest("dialog")?.close();
  });
  applyRole(document);
  every(2000, refreshCounts);
  return current;
}

/** Hide what the role may not do: elements marked data-needs="operator" or "admin"
 *  disappear, and fieldsets so marked are disabled (their values stay readable). */
export function applyRole(root) {
  for (const element of $$("[data-needs]", root)) {
    const allowed = can(element.dataset.needs);
    if (element.tagName === "FIELDSET") element.disabled = !allowed;
    else element.hidden = !allowed;
  }
}

let noticeTimer = null;
/** A short confirmation, announced politely to screen readers. */
export function notify(text) {
  const notice = $("#notice");
  notice.textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (notice.textContent = ""), 8000);
}

/** What went wrong, in words: the API's own detail, said plainly for a refusal. */
export function describe(error) {
  if (!(error instanceof ApiError)) return String(error?.message ?? error);
  if (error.status === 403) return `Not allowed: ${error.detail}`;
  return error.detail;
}

/** Show an error until dismissed (an alert: screen readers announce it at once). */
export function problem(error) {
  const box = $("#problem");
  $("[data-text]", box).textContent = describe(error);
  box.hidden = false;
}

export function clearProblem() {
  $("#problem").hidden = true;
}

/** Run an operator's action: its confirmation on success, the API's refusal otherwise. */
export async function act(work, done) {
  clearProblem();
  try {
    const result = await work();
    if (done) notify(typeof done === "function" ? done(result) : done);
    return result;
  } catch (error) {
    problem(error);
    return undefined;
  }
}

/** Call `work` now and every `ms` while the tab is visible; returns a function that
 *  refreshes at once (after an action), never running two refreshes at the same time. */
export function every(ms, work) {
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await work();
    } catch (error) {
      console.warn(error);
    } finally {
      running = false;
      if (again) {
        again = false;
        run();
      } else if (!document.hidden) {
        timer = setTimeout(run, ms);
      }
    }
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else run();
  });
  run();
  return run;
}

async function refreshCounts() {
  const stats = await api.get("/stats");
  for (const name of ["jobs", "queue", "executed", "failed"]) {
    const element = $(`[data-count="${name}"]`);
    if (element) element.textContent = String(stats[name]);
  }
}
