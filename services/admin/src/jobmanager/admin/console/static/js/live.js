// A live table over one of the API's lists: filters (kept in the address bar), keyset
// paging (Older / Newer / Newest), and a refresh every couple of seconds while the tab is
// visible. Refreshing never costs the operator their place: unchanged rows stay the very
// same elements, and focus in a changed row moves to the same button of its new version.

import { api } from "./api.js";
import { $, $$, h, localToIso } from "./dom.js";
import { describe, every } from "./shell.js";

/** The value a filter has when the page opens (not worth a place in the address). */
function defaultOf(control) {
  if (control.tagName !== "SELECT") return control.defaultValue;
  return [...control.options].find((option) => option.defaultSelected)?.value ?? "";
}

const timeOfDay = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

export class ListView {
  /** path: the API list ("/queue"); root: the element holding form.filters, the table, the
   *  pager and [data-status]; row(item): a <tr> for an item; empty: the text of no rows;
   *  rendered(items): called after every refresh that drew the page (a selection keeps
   *  only the rows still there). */
  constructor({ path, root, row, empty, interval = 2000, rendered = () => {} }) {
    Object.assign(this, { path, row, empty, interval, rendered });
    this.form = $("form.filters", root);
    this.body = $("tbody", root);
    this.columns = $$("thead th", root).length;
    this.status = $("[data-status]", root);
    this.pager = $("[data-pager]", root);
    this.previous = []; // the cursors of the pages before this one
    this.cursor = null;
    this.next = null;
    this.refresh = () => {};
  }

  start() {
    this.restoreFilters();
    let typing = null;
    const changed = () => {
      this.saveFilters();
      this.first();
    };
    this.form.addEventListener("input", (event) => {
      if (event.target.matches("input[type=search], input[type=text]")) {
        clearTimeout(typing);
        typing = setTimeout(changed, 350);
      }
    });
    this.form.addEventListener("change", (event) => {
      // Text filters already apply as they are typed; their change on blur adds nothing.
      if (!event.target.matches("input[type=search], input[type=text]")) changed();
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      changed();
    });
    this.form.addEventListener("reset", () => setTimeout(changed));
    this.pager.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-page]");
      if (!button || button.getAttribute("aria-disabled") === "true") return;
      this[button.dataset.page]();
    });
    this.refresh = every(this.interval, () => this.load());
    return this;
  }

  first() {
    this.previous = [];
    this.cursor = null;
    this.refresh();
  }

  older() {
    if (!this.next) return;
    this.previous.push(this.cursor);
    this.cursor = this.next;
    this.refresh();
  }

  newer() {
    if (!this.previous.length) return;
    this.cursor = this.previous.pop();
    this.refresh();
  }

  /** The filters as the API takes them, with the cursor of the page shown. */
  query() {
    const query = { cursor: this.cursor };
    for (const control of this.form.elements) {
      if (!control.name || !control.value) continue;
      query[control.name] = control.type === "datetime-local" ? localToIso(control.value) : control.value;
    }
    return query;
  }

  restoreFilters() {
    const params = new URLSearchParams(location.search);
    for (const control of this.form.elements) {
      if (control.name && params.has(control.name)) control.value = params.get(control.name);
    }
  }

  saveFilters() {
    const params = new URLSearchParams();
    for (const control of this.form.elements) {
      if (control.name && control.value && control.value !== defaultOf(control)) {
        params.set(control.name, control.value);
      }
    }
    const search = params.toString();
    history.replaceState(null, "", search ? `?${search}` : location.pathname);
  }

  async load() {
    try {
      const page = await api.get(this.path, this.query());
      this.next = page.next_cursor;
      this.render(page.items);
      this.rendered(page.items);
      this.status.textContent = `Updated ${timeOfDay.format(new Date())}`;
      this.status.classList.remove("stale");
    } catch (error) {
      this.status.textContent = `Not up to date: ${describe(error)}`;
      this.status.classList.add("stale");
    }
    this.renderPager();
  }

  render(items) {
    const focused = document.activeElement;
    const focusRow = focused?.closest?.("tr[data-key]");
    const focusKey = focusRow && this.body.contains(focusRow) ? focusRow.dataset.key : null;
    const focusAction = focused?.dataset?.action;
    const existing = new Map($$("tr[data-key]", this.body).map((tr) => [tr.dataset.key, tr]));
    const wanted = items.map((item) => {
      const key = String(item.id);
      const signature = JSON.stringify(item);
      const current = existing.get(key);
      if (current && current.dataset.signature === signature) return current;
      const tr = this.row(item);
      tr.dataset.key = key;
      tr.dataset.signature = signature;
      return tr;
    });
    if (!wanted.length) {
      wanted.push(h("tr", { class: "empty" }, h("td", { colspan: this.columns }, this.empty)));
    }
    // Insert in order without moving rows that are already in place: moving a row would
    // take the focus away from a button in it.
    const keep = new Set(wanted);
    for (const tr of [...this.body.rows]) if (!keep.has(tr)) tr.remove();
    wanted.forEach((tr, index) => {
      if (this.body.rows[index] !== tr) this.body.insertBefore(tr, this.body.rows[index] ?? null);
    });
    if (focusKey && !focused.isConnected) {
      const row = $(`tr[data-key="${CSS.escape(focusKey)}"]`, this.body);
      const again = focusAction && row && $(`[data-action="${CSS.escape(focusAction)}"]`, row);
      (again || row?.querySelector("a, button") || $("#main")).focus();
    }
  }

  renderPager() {
    const pageNumber = this.previous.length + 1;
    for (const button of $$("button[data-page]", this.pager)) {
      const enabled = button.dataset.page === "older" ? Boolean(this.next) : pageNumber > 1;
      button.setAttribute("aria-disabled", String(!enabled));
    }
    $("[data-page-number]", this.pager).textContent = `Page ${pageNumber}`;
  }
}
