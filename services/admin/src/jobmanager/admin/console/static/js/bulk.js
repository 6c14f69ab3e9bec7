// Selecting runs in a list and acting on all of them at once through the API's bulk
// endpoints: a checkbox per row and one for the page, a bar with the count and the table's
// bulk actions, and "Select all M matching this filter", which acts by the list's filters
// instead of by run ids. The selection is a set of run ids rather than the checkboxes' state,
// so it outlives the list's refreshes: a rebuilt row comes back checked, and a row that left
// the page leaves the selection (and the count).

import { can, request } from "./api.js";
import { confirmAction } from "./dialogs.js";
import { $, $$, h } from "./dom.js";
import { act, notify } from "./shell.js";

// The API's maximum: one action reaches at most this many runs, the oldest first, and says
// whether more match; counting the matches for the offer uses the same bound.
const LIMIT = 10_000;
// The filters the bulk endpoints take. The Queue's state and order and the page size only
// shape the list; a state would be refused, and Remove applies to queued runs anyway.
const FILTERS = ["job", "lane", "since", "until", "q"];

const plural = (n, one) => `${n.toLocaleString()} ${n === 1 ? one : `${one}s`}`;
const capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);
const stamp = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** The filters in words, for the confirmation: "matching job ipx-update, lane CNN-HD". */
function matching(filters) {
  const parts = [];
  if (filters.job) parts.push(`job ${filters.job}`);
  if (filters.lane) parts.push(`lane ${filters.lane}`);
  if (filters.q) parts.push(`“${filters.q}” in command or feedback`);
  if (filters.since) parts.push(`from ${stamp.format(new Date(filters.since))}`);
  if (filters.until) parts.push(`before ${stamp.format(new Date(filters.until))}`);
  return parts.length ? `matching ${parts.join(", ")}` : "(every one in the table)";
}

export class Selection {
  /** root: the list's section (the bar and the table); noun: what a row is ("failed run");
   *  actions: for each [data-bulk-action] button of the bar, {method, path, verb, confirm,
   *  done, left}: the endpoint, the words of the confirmation and of the outcome;
   *  selectable(item): whether the actions apply to a row at all (default: every row). */
  constructor({ root, noun, actions, selectable = () => true }) {
    Object.assign(this, { noun, actions, selectable });
    this.bar = $("[data-bulk]", root);
    this.count = $("[data-bulk-count]", this.bar);
    this.all = $("[data-bulk-all]", this.bar);
    this.pageBox = $("[data-select-page]", root);
    this.table = $("table", root);
    this.ids = new Set();
    this.filters = null; // acting by filter: the list's filters when all matching were selected
    this.counted = null; // {key, matched, more}: a dry run of the list's current filters
    this.counting = null; // the key being counted
    this.page = []; // the ids of the page's selectable rows
    this.view = null;
    // The same rule as the single-row buttons: only a role that may use one of the bar's
    // actions (each button needs its endpoint's role) sees a checkbox.
    this.enabled = $$("[data-bulk-action]", this.bar).some((b) => can(b.dataset.needs));
  }

  /** Follow `view` (a ListView built with `rendered: (items) => selection.rendered(items)`). */
  attach(view) {
    this.view = view;
    if (!this.enabled) return this;
    this.pageBox.hidden = false;
    this.table.classList.add("selectable");
    view.body.addEventListener("change", (event) => {
      const box = event.target.closest("input[data-action=select]");
      if (box) this.toggle(Number(box.value), box.checked);
    });
    this.pageBox.addEventListener("change", () => this.togglePage(this.pageBox.checked));
    this.all.addEventListener("click", () => this.selectMatching());
    $("[data-bulk-clear]", this.bar).addEventListener("click", () => {
      this.clear();
      this.pageBox.focus(); // the bar is gone: the focus stays where selecting starts
    });
    this.bar.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-bulk-action]");
      if (button) this.run(button.dataset.bulkAction, button);
    });
    // Another filter is another set of runs: what was selected under the old one goes.
    for (const type of ["input", "change", "reset"]) {
      view.form.addEventListener(type, () => this.clear());
    }
    return this;
  }

  /** The row's checkbox, or null when the role may not act or the actions do not apply. */
  box(item) {
    if (!this.enabled || !this.selectable(item)) return null;
    return h("input", {
      type: "checkbox",
      class: "pick",
      value: String(item.id),
      checked: Boolean(this.filters) || this.ids.has(item.id),
      dataset: { action: "select" }, // the list gives the focus back to it after a refresh
      "aria-label": `Select run ${item.id}`,
    });
  }

  /** After each refresh: keep only the selected rows still on the page. */
  rendered(items) {
    if (!this.enabled) return;
    this.page = items.filter((item) => this.selectable(item)).map((item) => item.id);
    if (!this.filters) {
      const here = new Set(this.page);
      for (const id of this.ids) if (!here.has(id)) this.ids.delete(id);
    }
    this.update();
  }

  toggle(id, checked) {
    if (this.filters) {
      // Leaving one out of "all matching" leaves the rest of the page selected, by id.
      this.filters = null;
      this.ids = new Set(this.page);
    }
    if (checked) this.ids.add(id);
    else this.ids.delete(id);
    this.update();
  }

  togglePage(checked) {
    if (!checked) {
      this.clear();
      return;
    }
    for (const id of this.page) this.ids.add(id);
    this.sync();
    this.update();
  }

  selectMatching() {
    this.filters = this.currentFilters();
    for (const id of this.page) this.ids.add(id);
    this.sync();
    this.update();
    this.pageBox.focus(); // the offer disappears; the focus stays on the selection
  }

  clear() {
    if (!this.ids.size && !this.filters) return;
    this.ids.clear();
    this.filters = null;
    this.sync();
    this.update();
  }

  /** The checkboxes as the selection says (a row left untouched by a refresh keeps its own). */
  sync() {
    for (const box of $$("input[data-action=select]", this.view.body)) {
      box.checked = Boolean(this.filters) || this.ids.has(Number(box.value));
    }
  }

  currentFilters() {
    const query = this.view.query();
    const given = FILTERS.filter((name) => query[name]);
    return Object.fromEntries(given.map((name) => [name, query[name]]));
  }

  /** The actions this role may use, in the bar's order. */
  allowed() {
    return $$("[data-bulk-action]", this.bar)
      .filter((button) => can(button.dataset.needs))
      .map((button) => button.dataset.bulkAction);
  }

  update() {
    const selected = this.ids.size;
    const whole = this.page.length > 0 && this.page.every((id) => this.ids.has(id));
    this.bar.hidden = !selected && !this.filters;
    this.pageBox.disabled = !this.page.length; // nothing here the actions apply to
    this.pageBox.checked = Boolean(this.filters) || whole;
    this.pageBox.indeterminate = !this.filters && selected > 0 && !whole;
    let count = `${selected.toLocaleString()} selected`;
    if (this.filters) {
      const counted = this.counted?.key === JSON.stringify(this.filters) ? this.counted : null;
      count = counted?.matched
        ? `${this.total(counted)} selected: all matching this filter`
        : "All matching this filter selected";
    }
    // Written only when it changes: screen readers announce each new text of the live count.
    if (this.count.textContent !== count) this.count.textContent = count;
    // The offer makes sense only when the whole page is selected and the list goes on.
    const more = Boolean(this.view.next) || this.view.previous.length > 0;
    const offer = !this.filters && whole && more;
    this.all.hidden = !offer;
    if (offer) this.offer();
  }

  total(counted) {
    return counted.more ? `${LIMIT.toLocaleString()}+` : counted.matched.toLocaleString();
  }

  /** "Select all M matching this filter", M counted by a dry run of the first action the
   *  role may use (the lists give no total), once per filter. */
  offer() {
    const filters = this.currentFilters();
    const key = JSON.stringify(filters);
    if (this.counted?.key === key) {
      const total = this.counted.matched === null ? "" : ` ${this.total(this.counted)}`;
      this.all.textContent = `Select all${total} matching this filter`;
      return;
    }
    this.all.textContent = "Select all matching this filter";
    if (this.counting === key) return;
    this.counting = key;
    const action = this.actions[this.allowed()[0]];
    request(action.method, action.path, { body: { ...filters, limit: LIMIT, dry_run: true } })
      .then((dry) => {
        this.counted = { key, matched: dry.matched, more: dry.more };
        this.update();
      })
      .catch((error) => {
        // Offered without its number rather than asked again at every refresh.
        console.warn(error);
        this.counted = { key, matched: null, more: false };
        this.update();
      })
      .finally(() => {
        if (this.counting === key) this.counting = null;
      });
  }

  /** Confirm with the count (a dry run's, when acting by filter), act, say what changed. */
  async run(name, opener) {
    // One action at a time: a second click while the first is in flight would act twice.
    if (this.bar.getAttribute("aria-busy") === "true") return;
    this.bar.setAttribute("aria-busy", "true");
    try {
      await this.confirmAndAct(name, opener);
    } finally {
      this.bar.removeAttribute("aria-busy");
    }
  }

  async confirmAndAct(name, opener) {
    const action = this.actions[name];
    const filters = this.filters;
    const ids = [...this.ids];
    const body = filters ? { ...filters, limit: LIMIT } : { run_ids: ids, limit: ids.length };
    let count = ids.length;
    let message;
    if (filters) {
      const counting = { ...body, dry_run: true };
      const dry = await act(() => request(action.method, action.path, { body: counting }));
      if (!dry) return;
      if (!dry.matched) {
        notify(`No ${this.noun} matches this filter any more.`);
        this.clear();
        this.view.refresh();
        return;
      }
      count = dry.matched;
      message = `This will ${action.verb} ${plural(count, this.noun)} ${matching(filters)}.`;
      if (dry.more) {
        const oldest = LIMIT.toLocaleString();
        message += ` More match: this acts on the oldest ${oldest}; do it again for the rest.`;
      }
    } else {
      message = `This will ${action.verb} the ${plural(count, `selected ${this.noun}`)}.`;
    }
    if (action.note) message += ` ${action.note}`;
    const sure = await confirmAction({
      title: `${capital(action.verb)} ${plural(count, this.noun)}?`,
      message,
      confirm: action.confirm,
      opener,
    });
    if (!sure) return;
    const done = await act(() => request(action.method, action.path, { body }));
    if (!done) return;
    notify(this.outcome(action, done, filters ? null : ids.length));
    const hadFocus = this.bar.contains(document.activeElement);
    this.counted = null;
    this.clear();
    if (hadFocus) this.pageBox.focus();
    this.view.refresh();
  }

  /** What changed: "18 runs removed; 2 runs left as they were (no longer queued)." */
  outcome(action, { matched, changed, more }, selected) {
    let text = `${plural(changed, "run")} ${action.done}`;
    if (matched > changed) {
      const left = matched - changed;
      text += `; ${plural(left, "run")} left as ${left === 1 ? "it was" : "they were"}`;
      if (action.left) text += ` (${action.left})`;
    }
    text += ".";
    if (selected !== null && selected > matched) {
      text += ` ${plural(selected - matched, "selected run")} had already left the table.`;
    }
    if (more) {
      text += ` More runs match than the ${LIMIT.toLocaleString()} acted on: do it again for the rest.`;
    }
    return text;
  }
}
