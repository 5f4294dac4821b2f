/**
 * The fleet panel: the listing from `GET /v1/devices` (followed page by page), the live
 * `status` events applied to it as they come, the filters and the counts. Events change
 * the model at once and the screen once a frame.
 */

import { ApiError } from "./api.js";
import { Fleet } from "./fleet.js";
import { FleetTable } from "./fleet-table.js";
import { figure } from "./format.js";

/** Devices per page: the most `GET /v1/devices` gives. */
const PAGE = 1000;
/** New devices looked up one by one, at most; past it the whole listing is read again. */
const LOOKUPS = 10;
/** Milliseconds new devices are gathered before they are looked up. */
const LOOKUP_DELAY = 500;
/** Fewest milliseconds between two whole listings caused by new devices. */
const RELIST_INTERVAL = 10_000;

/** @typedef {import("./fleet.js").Filter} Filter */

export class FleetPanel {
  #api;
  #fleet = new Fleet();
  #table;
  #section;
  #elements;
  /** @type {Filter} */
  #filter = { text: "", loc: "", group: "", state: "" };
  #viewRevision = -1;
  #facets = -1;
  #pending = false;
  #loading = false;
  #again = false;
  #lastListing = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #lookupTimer;
  #abort = new AbortController();
  #tick;
  /** @type {(message: string) => void} */
  #refused;

  /**
   * @param {import("./api.js").Api} api
   * @param {(message: string) => void} refused called when the hub refuses the token
   */
  constructor(api, refused) {
    this.#api = api;
    this.#refused = refused;
    const byId = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
    this.#section = byId("fleet");
    this.#elements = {
      online: byId("count-online"),
      offline: byId("count-offline"),
      total: byId("count-total"),
      progress: byId("fleet-progress"),
      shown: byId("fleet-shown"),
      message: byId("fleet-message"),
      text: /** @type {HTMLInputElement} */ (byId("filter-text")),
      loc: /** @type {HTMLSelectElement} */ (byId("filter-loc")),
      group: /** @type {HTMLSelectElement} */ (byId("filter-group")),
      state: /** @type {HTMLSelectElement} */ (byId("filter-state")),
    };
    this.#table = new FleetTable(byId("fleet-rows"));
    const form = byId("fleet-filters");
    form.addEventListener("input", () => this.#filtered(), { signal: this.#abort.signal });
    form.addEventListener("submit", (event) => event.preventDefault(), { signal: this.#abort.signal });
    // Ages ("12 s ago") move on by themselves: the rows in view are redrawn each second.
    this.#tick = setInterval(() => this.#schedule(), 1000);
    this.#section.dataset.state = "idle";
    this.#filtered();
  }

  /**
   * Read the whole listing; called on each fresh subscription to `status` (the first,
   * and every one that could not resume). A call during a listing makes one more after it.
   */
  async list() {
    if (this.#loading) {
      this.#again = true;
      return;
    }
    this.#loading = true;
    try {
      do {
        this.#again = false;
        await this.#listOnce();
      } while (this.#again);
      this.#note("");
    } catch (error) {
      if (this.#abort.signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) this.#refused(error.message);
      else this.#note(`The fleet could not be listed: ${error instanceof ApiError ? error.describe() : error}`);
    } finally {
      this.#loading = false;
      this.#elements.progress.textContent = "";
      this.#schedule();
    }
    if (this.#fleet.unknown().length > 0) this.#lookSoon();
  }

  async #listOnce() {
    const began = Date.now();
    const listed = new Set();
    this.#lastListing = began;
    this.#section.dataset.state = "loading";
    /** @type {string | undefined} */
    let after;
    do {
      const page = await this.#api.get("v1/devices", { limit: PAGE, after }, this.#abort.signal);
      for (const device of page.devices) {
        this.#fleet.merge(device);
        listed.add(device.sub);
      }
      after = typeof page.next === "string" ? page.next : undefined;
      this.#elements.progress.textContent = after === undefined ? "" : `listing… ${figure(listed.size)}`;
      this.#schedule();
    } while (after !== undefined);
    this.#fleet.prune(listed, began);
    this.#section.dataset.state = "ready";
  }

  /**
   * One event of the `status` room (only lifecycle events matter here).
   * @param {{event: string, data: any, ts: number}} event
   */
  apply(event) {
    const sub = this.#fleet.apply(event);
    if (sub === null) return;
    if (event.event === "device.online" && this.#fleet.get(sub)?.groups === null && !this.#loading) this.#lookSoon();
    this.#schedule();
  }

  /** @param {string} text a message above the table, or "" for none */
  #note(text) {
    this.#elements.message.textContent = text;
    this.#elements.message.hidden = text === "";
  }

  /** Devices that came online unlisted have no groups yet: ask the hub for them. */
  #lookSoon() {
    if (this.#lookupTimer !== undefined) return;
    this.#lookupTimer = setTimeout(() => {
      this.#lookupTimer = undefined;
      this.#lookUp().catch((error) => {
        if (!this.#abort.signal.aborted) this.#note(`New devices could not be looked up: ${error instanceof ApiError ? error.describe() : error}`);
      });
    }, LOOKUP_DELAY);
  }

  async #lookUp() {
    const unknown = this.#fleet.unknown();
    if (unknown.length === 0 || this.#loading) return;
    if (unknown.length > LOOKUPS) {
      // Many at once (a site powering up): one listing is cheaper than many look-ups.
      const wait = this.#lastListing + RELIST_INTERVAL - Date.now();
      if (wait > 0) {
        setTimeout(() => this.#lookSoon(), wait);
        return;
      }
      await this.list();
      return;
    }
    for (const sub of unknown) {
      // The page after the sub listed just before it starts at it.
      const after = this.#fleet.before(sub) ?? undefined;
      const page = await this.#api.get("v1/devices", { limit: LOOKUPS + 1, after }, this.#abort.signal);
      for (const device of page.devices) this.#fleet.merge(device);
    }
    this.#schedule();
  }

  #filtered() {
    const { text, loc, group, state } = this.#elements;
    this.#filter = {
      text: text.value,
      loc: loc.value,
      group: group.value,
      state: /** @type {Filter["state"]} */ (state.value),
    };
    this.#viewRevision = -1;
    this.#schedule();
  }

  #schedule() {
    if (this.#pending || this.#abort.signal.aborted) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      if (!this.#abort.signal.aborted) this.#render();
    });
  }

  #render() {
    const fleet = this.#fleet;
    const { online, offline, total, shown, loc, group } = this.#elements;
    if (fleet.facets !== this.#facets) {
      this.#facets = fleet.facets;
      options(loc, fleet.locations());
      options(group, fleet.groups());
    }
    if (fleet.revision !== this.#viewRevision) {
      this.#viewRevision = fleet.revision;
      const view = fleet.select(this.#filter);
      this.#table.show(view);
      shown.textContent = view.length === fleet.size ? "" : `showing ${figure(view.length)}`;
    }
    online.textContent = figure(fleet.online);
    offline.textContent = figure(fleet.size - fleet.online);
    total.textContent = figure(fleet.size);
    this.#table.render();
  }

  stop() {
    this.#abort.abort();
    clearInterval(this.#tick);
    clearTimeout(this.#lookupTimer);
    this.#table.destroy();
    this.#section.dataset.state = "idle";
    for (const element of [this.#elements.online, this.#elements.offline, this.#elements.total]) element.textContent = "0";
    this.#elements.shown.textContent = "";
    this.#note("");
  }
}

/**
 * Make a filter's choices `names`, keeping what is chosen (even when it is gone).
 * @param {HTMLSelectElement} select
 * @param {string[]} names
 */
function options(select, names) {
  const chosen = select.value;
  const wanted = chosen !== "" && !names.includes(chosen) ? [...names, chosen].sort() : names;
  const choices = [new Option("any", ""), ...wanted.map((name) => new Option(name, name))];
  select.replaceChildren(...choices);
  select.value = chosen;
}
