/**
 * Delivery receipts of the commands sent from the form, filling in device by device: the
 * hub's list (`GET .../receipts`) when the command is sent, then each `delivery.receipt`
 * of the `status` room as it comes. A command to a whole fleet may get thousands: the
 * counts cover all of them, the table the most recent `SHOWN`.
 */

import { ApiError, roomPath } from "./api.js";
import { clock, compact, figure } from "./format.js";

/** Commands followed at once; an older one is let go when another is sent. */
const TRACKED = 4;
/** Receipts listed per command (the counts include every one). */
const SHOWN = 100;
const STATUSES = ["received", "done", "failed"];

/**
 * The latest receipt of one principal.
 * @typedef {{sub: string, role: string, status: string, time: number, data?: any}} Receipt
 */

class Tracked {
  /** @type {Map<string, Receipt>} by `role sub` */
  receipts = new Map();
  element;
  #counts;
  #body;
  #note;

  /**
   * @param {string} room
   * @param {string} id
   * @param {string} name the command's name
   */
  constructor(room, id, name) {
    this.room = room;
    this.id = id;
    this.element = document.createElement("div");
    this.element.className = "tracked";
    this.element.dataset.room = room;
    this.element.dataset.id = id;
    const title = document.createElement("p");
    title.className = "title";
    const what = document.createElement("b");
    what.textContent = `command ${name}`;
    const where = document.createElement("code");
    where.textContent = `${room} · ${id}`;
    title.append(what, " → ", where);
    this.#counts = document.createElement("p");
    this.#counts.className = "receipt-counts";
    this.#note = document.createElement("p");
    this.#note.className = "muted";
    this.#note.textContent = "waiting for receipts…";
    const table = document.createElement("table");
    table.className = "receipt-table";
    const head = table.createTHead().insertRow();
    for (const text of ["device", "status", "time", "data"]) {
      const th = document.createElement("th");
      th.textContent = text;
      head.append(th);
    }
    this.#body = table.createTBody();
    this.element.append(title, this.#counts, this.#note, table);
  }

  /** Keep a receipt unless one at least as new is known for its principal. @param {Receipt} receipt */
  take(receipt) {
    const key = `${receipt.role} ${receipt.sub}`;
    const known = this.receipts.get(key);
    if (known === undefined || known.time <= receipt.time) this.receipts.set(key, receipt);
  }

  /** @param {string} text */
  say(text) {
    this.#note.textContent = text;
    this.#note.hidden = text === "";
  }

  render() {
    const all = [...this.receipts.values()];
    const counts = STATUSES.map((status) => `${figure(all.filter((r) => r.status === status).length)} ${status}`);
    this.#counts.textContent = `${figure(all.length)} answered: ${counts.join(" · ")}`;
    if (all.length > 0) this.say(all.length > SHOWN ? `the ${SHOWN} latest of ${figure(all.length)}` : "");
    const rows = all.sort((a, b) => b.time - a.time || a.sub.localeCompare(b.sub)).slice(0, SHOWN);
    this.#body.replaceChildren(...rows.map((receipt) => {
      const row = document.createElement("tr");
      row.dataset.sub = receipt.sub;
      row.dataset.status = receipt.status;
      const cells = [
        receipt.role === "device" ? receipt.sub : `${receipt.sub} (${receipt.role})`,
        receipt.status,
        clock(receipt.time, true),
        receipt.data === undefined ? "" : compact(receipt.data, 80),
      ];
      for (const text of cells) row.insertCell().textContent = text;
      row.cells[1].className = `receipt-${receipt.status}`;
      return row;
    }));
  }
}

export class Receipts {
  #api;
  #container;
  /** @type {Tracked[]} newest first */
  #tracked = [];
  /** @type {Set<Tracked>} */
  #dirty = new Set();
  #pending = false;
  #stopped = false;

  /**
   * @param {import("./api.js").Api} api
   * @param {HTMLElement} container
   */
  constructor(api, container) {
    this.#api = api;
    this.#container = container;
  }

  /**
   * Follow a command just published: list what the hub already has (a fast device may
   * have answered before this runs), then live receipts fill in.
   * @param {string} room
   * @param {string} id
   * @param {string} name
   */
  async track(room, id, name) {
    const tracked = new Tracked(room, id, name);
    this.#tracked.unshift(tracked);
    for (const old of this.#tracked.splice(TRACKED)) old.element.remove();
    this.#container.prepend(tracked.element);
    this.#changed(tracked);
    try {
      const answer = await this.#api.get(`${roomPath(room)}/events/${encodeURIComponent(id)}/receipts`);
      for (const receipt of answer.receipts) tracked.take(receipt);
    } catch (error) {
      tracked.say(`The receipts could not be read: ${error instanceof ApiError ? error.describe() : error}`);
    }
    this.#changed(tracked);
  }

  /**
   * A `delivery.receipt` of the `status` room.
   * @param {{event: string, data: any, ts: number}} event
   */
  apply(event) {
    if (event.event !== "delivery.receipt") return;
    const { sub, role, room, id, status, data } = event.data ?? {};
    const tracked = this.#tracked.find((t) => t.room === room && t.id === id);
    if (tracked === undefined || typeof sub !== "string") return;
    tracked.take({ sub, role, status, time: event.ts, ...(data === undefined ? {} : { data }) });
    this.#changed(tracked);
  }

  /** @param {Tracked} tracked */
  #changed(tracked) {
    this.#dirty.add(tracked);
    if (this.#pending) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      if (this.#stopped) return;
      for (const each of this.#dirty) each.render();
      this.#dirty.clear();
    });
  }

  stop() {
    this.#stopped = true;
    this.#container.replaceChildren();
    this.#tracked = [];
  }
}
