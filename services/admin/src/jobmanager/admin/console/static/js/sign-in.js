// The sign-in page: the key is checked with the API (GET /whoami) before it is kept.

import { ApiError, signIn } from "./api.js";
import { showErrors, submitting } from "./dialogs.js";
import { $ } from "./dom.js";

const params = new URLSearchParams(location.search);
const form = $("#sign-in-form");

/** Where to go after signing in: a page of this console, never another site. */
function nextPage() {
  const next = params.get("next") || "";
  const ours = next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/sign-in");
  return ours ? next : "/overview";
}

if (params.get("reason") === "expired") {
  $("[data-reason]").textContent = "The key was not accepted any more; sign in again.";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = form.elements.namedItem("key").value.trim();
  if (!key) {
    showErrors(form, new ApiError(422, { detail: "key: enter an API key" }));
    return;
  }
  const who = await submitting(form, async () => {
    try {
      return await signIn(key);
    } catch (error) {
      if (error.status === 401) {
        throw new ApiError(401, { detail: `key: ${error.detail}` });
      }
      throw error;
    }
  });
  if (who) location.assign(nextPage());
});
$("#key").focus();
