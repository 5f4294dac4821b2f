/**
 * The broadcast form: one typed event (or an `x.*` one with any JSON data) to one or
 * several rooms, through `POST /v1/broadcast`. Each send carries an `Idempotency-Key`, so
 * a send whose answer was lost is retried without publishing twice; the answer (ids, time
 * and each room's reach, or the hub's refusal) is shown, and a `command`'s receipts are
 * followed.
 */

import { ApiError, sleep } from "./api.js";
import { clock, figure } from "./format.js";

/** Tries of one send when the hub cannot be reached; the same key makes them one publish. */
const TRIES = 3;
const RETRY_DELAY = 1000;

/** The form's input is not a broadcast: said before anything is sent. */
class Invalid extends Error {}

export class BroadcastForm {
  #api;
  #receipts;
  #abort = new AbortController();
  #elements;

  /**
   * @param {import("./api.js").Api} api
   * @param {import("./receipts.js").Receipts} receipts
   * @param {string | null} refusal why this token may not broadcast, or null when it may
   */
  constructor(api, receipts, refusal) {
    this.#api = api;
    this.#receipts = receipts;
    const byId = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
    this.#elements = {
      form: /** @type {HTMLFormElement} */ (byId("broadcast-form")),
      event: /** @type {HTMLSelectElement} */ (byId("bc-event")),
      send: /** @type {HTMLButtonElement} */ (byId("bc-send")),
      result: byId("broadcast-result"),
      message: byId("broadcast-message"),
    };
    const { form, event, send, message } = this.#elements;
    const signal = this.#abort.signal;
    event.addEventListener("change", () => this.#showFields(), { signal });
    form.addEventListener("submit", (submitted) => {
      submitted.preventDefault();
      this.#send().catch((error) => this.#show("error", `Not sent: ${error}`));
    }, { signal });
    this.#showFields();
    message.textContent = refusal ?? "";
    message.hidden = refusal === null;
    send.disabled = refusal !== null;
    for (const field of form.elements) if (field instanceof HTMLFieldSetElement) field.disabled ||= refusal !== null;
    form.classList.toggle("refused", refusal !== null);
  }

  /** Only the chosen event's fields are shown (and submitted). */
  #showFields() {
    const chosen = this.#elements.event.value;
    for (const fieldset of this.#elements.form.querySelectorAll("fieldset")) {
      const mine = fieldset.dataset.event === chosen;
      fieldset.hidden = !mine;
      fieldset.disabled = !mine;
    }
  }

  async #send() {
    const { form, send } = this.#elements;
    let body;
    try {
      body = request(new FormData(form));
    } catch (error) {
      if (!(error instanceof Invalid)) throw error;
      this.#show("error", error.message);
      return;
    }
    const text = JSON.stringify(body);
    const key = idempotencyKey();
    send.disabled = true;
    this.#show("pending", "sending…");
    try {
      for (let attempt = 1; ; attempt += 1) {
        try {
          const answer = await this.#api.request("POST", "v1/broadcast", {
            body: text,
            headers: { "Idempotency-Key": key },
            signal: this.#abort.signal,
          });
          this.#accepted(body, answer, attempt);
          return;
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          if (error.status !== 0 || attempt >= TRIES) {
            this.#show("error", `Refused: ${error.describe()}`);
            return;
          }
          this.#show("pending", `the hub cannot be reached; trying again (${attempt + 1} of ${TRIES}, same Idempotency-Key)…`);
          await sleep(RETRY_DELAY, this.#abort.signal);
        }
      }
    } catch (error) {
      if (this.#abort.signal.aborted) return;
      throw error;
    } finally {
      if (!this.#abort.signal.aborted) send.disabled = false;
    }
  }

  /**
   * @param {{rooms: string[], event: string, data: any}} body
   * @param {import("./api.js").Answer} answer
   * @param {number} attempt
   */
  #accepted(body, answer, attempt) {
    const { ids, ts, reach } = answer.body;
    const replayed = answer.headers.get("Idempotent-Replayed") === "true";
    // An older node answers without `reach`: the ids alone are shown then.
    const lines = Object.entries(ids).map(([room, id]) => roomLine(room, String(id), reach?.[room]));
    const how = replayed ? " (a replay: the first try had been published)" : attempt > 1 ? ` (on try ${attempt})` : "";
    this.#show("ok", `${answer.status} accepted at ${clock(ts, true)}${how}`, lines);
    if (body.event === "command") {
      for (const [room, id] of Object.entries(ids)) {
        this.#receipts.track(room, String(id), String(body.data.name)).catch(() => {});
      }
    }
  }

  /**
   * @param {"ok" | "error" | "pending"} kind
   * @param {string} text
   * @param {HTMLElement[]} [lines] each on its own line
   */
  #show(kind, text, lines = []) {
    const result = this.#elements.result;
    result.dataset.kind = kind;
    const head = document.createElement("p");
    head.textContent = text;
    result.replaceChildren(head, ...lines);
  }

  stop() {
    this.#abort.abort();
    this.#elements.result.replaceChildren();
    this.#elements.send.disabled = false;
    for (const field of this.#elements.form.elements) if (field instanceof HTMLFieldSetElement) field.disabled = false;
    this.#showFields();
  }
}

/**
 * One room of an accepted broadcast: its event's id, and how many sockets it reached when
 * the hub knows. Nobody in a room is worth saying: a mistyped room reaches no one.
 * @param {string} room
 * @param {string} id
 * @param {unknown} reach
 */
function roomLine(room, id, reach) {
  const line = document.createElement("div");
  line.className = "room-line";
  line.dataset.room = room;
  const code = document.createElement("code");
  code.textContent = `${room}: ${id}`;
  line.append(code);
  if (typeof reach === "number") {
    const count = document.createElement("span");
    count.className = "reach";
    count.dataset.reach = String(reach);
    count.title = "sockets subscribed to the room across the cluster when the hub accepted the broadcast";
    count.textContent = reach === 0 ? "reach 0: nobody is subscribed to this room" : `reach ${figure(reach)}`;
    line.append(count);
  }
  return line;
}

/**
 * The broadcast's body from the form's fields.
 * @param {FormData} form
 * @returns {{rooms: string[], event: string, data: Record<string, any>}}
 */
export function request(form) {
  const value = (/** @type {string} */ name) => String(form.get(name) ?? "").trim();
  const rooms = value("rooms").split(",").map((room) => room.trim()).filter(Boolean);
  if (rooms.length === 0) throw new Invalid("Name at least one room (several: comma-separated).");
  const kind = value("event");
  /** @type {Record<string, any>} */
  const data = {};
  const optional = (/** @type {string} */ name, /** @type {any} */ parsed) => {
    if (parsed !== "" && parsed !== undefined) data[name] = parsed;
  };
  switch (kind) {
    case "content.update": {
      data.content_id = required(value("content_id"), "content_id");
      optional("url", value("url"));
      const version = value("version");
      optional("version", /^-?\d{1,15}$/.test(version) ? Number(version) : version);
      return { rooms, event: kind, data };
    }
    case "playlist.update":
      data.playlist_id = required(value("playlist_id"), "playlist_id");
      optional("items", json(value("items"), "items", Array.isArray, "a JSON list"));
      return { rooms, event: kind, data };
    case "command":
      data.name = required(value("name"), "name");
      optional("args", json(value("args"), "args", isObject, "a JSON object"));
      return { rooms, event: kind, data };
    case "alert":
      data.level = value("level");
      data.message = required(value("message"), "message");
      return { rooms, event: kind, data };
    default: {
      const name = value("x_name");
      if (!/^x\.[a-z0-9_]+(\.[a-z0-9_]+)*$/.test(name)) {
        throw new Invalid("An x.* event's name starts with x. and goes on in lower-case letters, digits, _ and dots.");
      }
      return { rooms, event: name, data: json(value("x_data"), "data", isObject, "a JSON object") ?? {} };
    }
  }
}

/**
 * @param {string} text
 * @param {string} name
 */
function required(text, name) {
  if (text === "") throw new Invalid(`${name} is required.`);
  return text;
}

/**
 * Parse an optional JSON field; "" is left out.
 * @param {string} text
 * @param {string} name
 * @param {(value: any) => boolean} fits
 * @param {string} what
 */
function json(text, name, fits, what) {
  if (text === "") return undefined;
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Invalid(`${name} is not JSON: ${error instanceof Error ? error.message : error}`);
  }
  if (!fits(parsed)) throw new Invalid(`${name} must be ${what}.`);
  return parsed;
}

/** @param {any} value */
function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * A random key of the characters the hub takes (a UUID's). `crypto.randomUUID` exists only
 * on secure origins, and a node may be served over plain HTTP on a LAN address.
 */
export function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `console-${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
