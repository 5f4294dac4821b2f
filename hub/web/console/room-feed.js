/**
 * The live events of one room the operator picks, newest first. The list is bounded, and
 * a burst (the `status` room of a large fleet heartbeating) costs one DOM update a frame
 * holding at most the newest `KEPT` events.
 */

import { clock, compact } from "./format.js";

/** Events the list keeps. */
export const KEPT = 200;

/** @typedef {{room: string, event: string, data: any, ts: number, id?: string}} HubEvent */

export class RoomFeed {
  #live;
  /** @type {(() => void) | null} */
  #unlisten = null;
  /** @type {string | null} */
  #room = null;
  /** @type {{event: HubEvent, state: boolean}[]} newest last, waiting for the next frame */
  #waiting = [];
  #pending = false;
  #abort = new AbortController();
  #elements;

  /** @param {import("./live.js").Live} live */
  constructor(live) {
    this.#live = live;
    const byId = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
    this.#elements = {
      form: /** @type {HTMLFormElement} */ (byId("events-form")),
      input: /** @type {HTMLInputElement} */ (byId("events-input")),
      room: byId("events-room"),
      message: byId("events-message"),
      list: byId("events-list"),
      clear: byId("events-clear"),
    };
    const signal = this.#abort.signal;
    this.#elements.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.watch(this.#elements.input.value.trim());
    }, { signal });
    this.#elements.clear.addEventListener("click", () => {
      this.#waiting = [];
      this.#elements.list.replaceChildren();
    }, { signal });
  }

  /** Show `room`'s events from now on, instead of the room watched before. @param {string} room */
  watch(room) {
    if (room === "" || room === this.#room) return;
    this.#unlisten?.();
    this.#room = room;
    this.#waiting = [];
    this.#elements.list.replaceChildren();
    this.#elements.room.textContent = room;
    this.#note(`joining ${room}…`);
    this.#unlisten = this.#live.listen(room, {
      event: (event) => this.#add(event, false),
      state: (events) => {
        this.#note("");
        for (const event of events) this.#add(event, true);
      },
      lost: () => this.#note("Some events of this room may be missing here: the hub could not replay all it sent while the connection was down."),
      refused: (code, message) => {
        this.#note(`The hub refused ${room}: ${code}: ${message}`);
        this.#room = null;
        this.#unlisten = null;
      },
    });
  }

  /**
   * @param {HubEvent} event
   * @param {boolean} state handed over from the room's current state
   */
  #add(event, state) {
    this.#waiting.push({ event, state });
    if (this.#waiting.length > KEPT) this.#waiting.splice(0, this.#waiting.length - KEPT);
    if (this.#pending) return;
    this.#pending = true;
    requestAnimationFrame(() => {
      this.#pending = false;
      if (!this.#abort.signal.aborted) this.#render();
    });
  }

  #render() {
    const list = this.#elements.list;
    const items = this.#waiting.reverse().map(({ event, state }) => item(event, state));
    this.#waiting = [];
    list.prepend(...items);
    while (list.childElementCount > KEPT) list.lastElementChild?.remove();
  }

  /** @param {string} text */
  #note(text) {
    this.#elements.message.textContent = text;
    this.#elements.message.hidden = text === "";
  }

  stop() {
    this.#abort.abort();
    this.#unlisten?.();
    this.#unlisten = null;
    this.#room = null;
    this.#waiting = [];
    this.#elements.list.replaceChildren();
    this.#elements.room.textContent = "";
    this.#note("");
  }
}

/**
 * One event as a list item: time, id, name, then its data on one line.
 * @param {HubEvent} event
 * @param {boolean} state
 */
function item(event, state) {
  const li = document.createElement("li");
  li.className = state ? "state" : "";
  const head = document.createElement("div");
  head.className = "head";
  const time = document.createElement("time");
  time.dateTime = new Date(event.ts).toISOString();
  time.textContent = clock(event.ts, true);
  const name = document.createElement("b");
  name.textContent = event.event;
  const id = document.createElement("code");
  id.textContent = event.id ?? "no id";
  head.append(time, name, id);
  if (state) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "current state";
    head.append(tag);
  }
  const data = document.createElement("code");
  data.className = "data";
  data.textContent = compact(event.data);
  data.title = compact(event.data, 4000);
  li.append(head, data);
  return li;
}
