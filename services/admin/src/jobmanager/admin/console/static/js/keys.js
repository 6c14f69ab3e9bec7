// The API keys page (admin): every key with its role and last use; create one (its secret is
// shown once, in a dialog of its own) and revoke one. Another role gets the page's refusal;
// were that skipped, the API's 403 is what the list shows.

import { ago } from "./ago.js";
import { api, can, session } from "./api.js";
import { confirmAction, openDialog, submitting } from "./dialogs.js";
import { $, badge, h } from "./dom.js";
import { ListView } from "./live.js";
import { act, notify, start } from "./shell.js";

let view;

/** Whether `key` is the one this tab is signed in with: revoking it signs the tab out. */
const isOwn = (key) => Boolean(session()?.key.startsWith(key.prefix));

async function revoke(key, opener) {
  const own = isOwn(key);
  const sure = await confirmAction({
    title: `Revoke key ${key.name}?`,
    message:
      "Every call with it is refused from now on; a revoked key cannot be restored." +
      (own ? " It is the key you are signed in with: you will have to sign in again." : ""),
    confirm: "Revoke key",
    opener,
  });
  if (!sure) return;
  await act(() => api.delete(`/keys/${key.id}`), `Key ${key.name} revoked.`);
  view.refresh(); // with our own key revoked, this sends the tab to the sign-in page
}

function state(key) {
  if (key.revoked_at) return [badge("revoked", "failed"), " ", ago(key.revoked_at)];
  return badge("active", "succeeded");
}

function row(key) {
  return h(
    "tr",
    { class: key.revoked_at ? "revoked" : null },
    h("th", { scope: "row", class: "name" }, key.name, isOwn(key) ? h("span", { class: "muted" }, " (this tab)") : null),
    h("td", {}, badge(key.role)),
    h("td", {}, h("code", {}, `${key.prefix}…`)),
    h("td", {}, ago(key.created_at)),
    h("td", {}, ago(key.last_used_at, "never")),
    h("td", { class: "state" }, state(key)),
    h(
      "td",
      { class: "actions" },
      key.revoked_at
        ? null
        : h(
            "button",
            {
              type: "button",
              class: "danger",
              dataset: { action: "revoke" },
              "aria-label": `Revoke key ${key.name}`,
              onclick: (event) => revoke(key, event.currentTarget),
            },
            "Revoke",
          ),
    ),
  );
}

// -- the secret, shown once --------------------------------------------------------------

async function copy() {
  const field = $("#secret-key");
  const said = $("[data-copied]");
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    said.textContent = "Copied to the clipboard.";
  } catch {
    // No clipboard access (an insecure origin, a refused permission): the key is selected.
    said.textContent = "The key is selected: press Ctrl+C (⌘C) to copy it.";
  }
}

function showSecret(created, opener) {
  const dialog = $("#secret-dialog");
  const field = $("#secret-key");
  $("[data-secret-name]", dialog).textContent = created.name;
  $("[data-copied]", dialog).textContent = "";
  field.value = created.key;
  // Once closed, the key is gone from the page: nothing left to read it from.
  dialog.addEventListener("close", () => (field.value = ""), { once: true });
  openDialog(dialog, opener);
  field.focus();
  field.select();
}

function setUpCreate() {
  const dialog = $("#key-dialog");
  const form = $("#key-form");
  const opener = $("[data-action=new-key]");
  opener.addEventListener("click", () => {
    form.reset();
    openDialog(dialog, opener);
    $("#key-name").focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      name: form.elements.namedItem("name").value.trim(),
      role: form.elements.namedItem("role").value,
    };
    const created = await submitting(form, () => api.post("/keys", body));
    if (!created) return;
    // The secret's dialog opens once this one has closed (and given the focus back), so
    // that the focus ends in the secret's field, its own opener the New key button.
    dialog.addEventListener("close", () => showSecret(created, opener), { once: true });
    dialog.close();
    notify(`Key ${created.name} created with the ${created.role} role.`);
    view.refresh();
  });
  $("[data-action=copy-key]").addEventListener("click", copy);
}

const current = start();
if (current && !can("admin")) {
  $("[data-refusal-who]").textContent = `You are signed in as ${current.name}, a key with the ${current.role} role.`;
  $("[data-refusal]").hidden = false;
} else if (current) {
  view = new ListView({ path: "/keys", root: $(".list"), row, empty: "No API keys." }).start();
  setUpCreate();
}
