/**
 * The fleet's rows, virtualised: however many devices are shown, only the rows in view
 * (and a few around them) exist in the DOM, and a render rewrites only the cells whose
 * text changed. With 20,000 devices a frame costs the same as with 20.
 */

import { age, dateTime, shown } from "./format.js";

/** Pixels per row; every row has this height, so a scroll offset is a row index. */
export const ROW_HEIGHT = 28;
/** Rows kept beyond each edge of the view, so a fast scroll does not show blanks. */
const OVERSCAN = 8;
const COLUMNS = ["state", "sub", "loc", "groups", "status", "content", "cpu", "temp", "beat", "since", "node"];

/** @typedef {import("./fleet.js").Device} Device */

/**
 * One row element, reused for whichever device is at its place.
 * @typedef {object} Row
 * @property {HTMLElement} element
 * @property {HTMLElement[]} cells
 * @property {string[]} texts what each cell shows now
 */

export class FleetTable {
  /** @type {HTMLElement} */
  #viewport;
  /** @type {HTMLElement} */
  #spacer;
  /** @type {Row[]} */
  #rows = [];
  /** @type {Device[]} */
  #devices = [];
  #pending = false;
  #abort = new AbortController();
  #resized = new ResizeObserver(() => this.schedule());

  /** @param {HTMLElement} viewport the scrolling element; its first child is the spacer */
  constructor(viewport) {
    this.#viewport = viewport;
    this.#spacer = /** @type {HTMLElement} */ (viewport.firstElementChild);
    viewport.addEventListener("scroll", () => this.schedule(), { passive: true, signal: this.#abort.signal });
    this.#resized.observe(viewport);
  }

  /** Let go of the viewport: no more renders, no rows left in it. */
  destroy() {
    this.#abort.abort();
    this.#resized.disconnect();
    this.#devices = [];
    for (const row of this.#rows) row.element.remove();
    this.#rows = [];
    this.#spacer.style.height = "0px";
  }

  /** The devices to show, in order (the table keeps the array; it is replaced, never changed). @param {Device[]} devices */
  show(devices) {
    this.#devices = devices;
    this.#spacer.style.height = `${devices.length * ROW_HEIGHT}px`;
    this.#viewport.parentElement?.setAttribute("aria-rowcount", String(devices.length + 1));
  }

  /** Render at the next animation frame; any number of calls make one render. */
  schedule() {
    if (this.#pending || this.#abort.signal.aborted) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      if (!this.#abort.signal.aborted) this.render();
    });
  }

  /** Fill the rows in view from the devices' current records. */
  render() {
    const height = this.#viewport.clientHeight;
    const first = Math.max(0, Math.floor(this.#viewport.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const count = Math.min(this.#devices.length - first, Math.ceil(height / ROW_HEIGHT) + 2 * OVERSCAN);
    while (this.#rows.length < count) this.#rows.push(this.#makeRow());
    const now = Date.now();
    this.#rows.forEach((row, i) => {
      const device = i < count ? this.#devices[first + i] : undefined;
      if (device === undefined) {
        row.element.hidden = true;
        delete row.element.dataset.sub;
        return;
      }
      row.element.hidden = false;
      row.element.style.transform = `translateY(${(first + i) * ROW_HEIGHT}px)`;
      row.element.setAttribute("aria-rowindex", String(first + i + 2)); // the header is row 1
      row.element.dataset.sub = device.sub;
      row.element.dataset.online = String(device.online);
      fill(row, device, now);
    });
  }

  /** @returns {Row} */
  #makeRow() {
    const element = document.createElement("div");
    element.className = "row";
    element.setAttribute("role", "row");
    element.style.height = `${ROW_HEIGHT}px`;
    const cells = COLUMNS.map((name) => {
      const cell = document.createElement("span");
      cell.setAttribute("role", "cell");
      cell.className = name;
      element.append(cell);
      return cell;
    });
    this.#spacer.append(element);
    return { element, cells, texts: COLUMNS.map(() => "") };
  }
}

/**
 * @param {Row} row
 * @param {Device} device
 * @param {number} now
 */
function fill(row, device, now) {
  const beat = device.heartbeat ?? {};
  const texts = [
    device.online ? "online" : "offline",
    device.sub,
    device.loc ?? "",
    device.groups === null ? "…" : device.groups.join(", "),
    shown(beat.status),
    shown(beat.content),
    typeof beat.cpu === "number" ? `${shown(beat.cpu)} %` : "",
    typeof beat.temp === "number" ? `${shown(beat.temp)} °C` : "",
    typeof beat.time === "number" ? `${age(beat.time, now)} ago` : "never",
    device.since === null ? "" : device.online ? age(device.since, now) : `${age(device.since, now)} · ${device.offline_reason ?? "?"}`,
    device.node ?? "",
  ];
  texts.forEach((text, i) => {
    if (row.texts[i] !== text) {
      row.texts[i] = text;
      row.cells[i].textContent = text;
    }
  });
  // Full values on hover: ids and groups may be longer than their column, ages hide dates.
  row.cells[1].title = device.sub;
  row.cells[3].title = texts[3];
  row.cells[8].title = typeof beat.time === "number" ? dateTime(beat.time) : "";
  row.cells[9].title = device.since === null ? "" : `${device.online ? "online" : "offline"} since ${dateTime(device.since)}`;
}
