/**
 * The console's one socket, through the hub's own browser client (`/client.js`): it
 * reconnects, resumes every room from the last event seen, and hands each event over
 * once and in order. Panels listen to rooms; a room is joined while some panel listens to
 * it, and each event goes to that room's listeners.
 */

import { HubClient, HubRefused, RoomRefused, socketUrl } from "../client.js";

/**
 * What a panel does with a room's traffic.
 * @typedef {object} Listener
 * @property {(event: any) => void} [event] each event, once, in id order
 * @property {(events: any[]) => void} [state] the room's current state, on each (re)subscribe:
 *   the subscription is live from here on
 * @property {() => void} [lost] the room could not be resumed: events may be missing
 * @property {(code: string, message: string) => void} [refused] the hub will not serve the room
 */

/**
 * How the connection stands, for the header.
 * @typedef {"connecting" | "live" | "reconnecting" | "refused" | "off"} LinkState
 */

export class Live {
  /** @type {Map<string, Set<Listener>>} */
  #listeners = new Map();
  #client;

  /**
   * @param {string} token
   * @param {(state: LinkState | null, detail: string) => void} onLink null: the state stands
   * @param {(message: string) => void} onRefused the socket was refused for good
   */
  constructor(token, onLink, onRefused) {
    this.#client = new HubClient([socketUrl(document.baseURI)], token, {
      onEvent: (event) => this.#each(event.room, (listener) => listener.event?.(event)),
      onState: (room, events) => this.#each(room, (listener) => listener.state?.(events)),
      onLost: (room) => this.#each(room, (listener) => listener.lost?.()),
      onError: (error) => {
        if (error instanceof RoomRefused) {
          this.#refusedRoom(error);
        } else if (error instanceof HubRefused) {
          onLink("refused", error.message);
          onRefused(error.message);
        } else {
          onLink("refused", String(error));
        }
      },
      // The client's notes go to the header's tooltip, not to the browser's console; its
      // `disconnected` events say when it reconnects. (One note is expected: the token is
      // given as a string, so an `expiring` notice is not answered; the session ends at
      // the token's `exp` and asks for a new one.)
      log: {
        info: () => {},
        warn: (/** @type {string} */ message) => onLink(null, message.replace(/^hub client: /, "")),
        error: (/** @type {unknown[]} */ ...said) => console.error(...said),
      },
    });
    this.#client.addEventListener("connected", (event) => {
      const welcome = /** @type {CustomEvent} */ (event).detail;
      onLink("live", `node ${welcome?.node ?? "?"}`);
    });
    this.#client.addEventListener("disconnected", (event) => {
      const { reason, delay } = /** @type {CustomEvent} */ (event).detail;
      onLink("reconnecting", `${reason}; retrying in ${Number(delay).toFixed(1)} s`);
    });
    onLink("connecting", "");
  }

  start() {
    this.#client.start();
  }

  /**
   * Listen to `room` until the returned function is called; the first listener joins it.
   * @param {string} room
   * @param {Listener} listener
   * @returns {() => void}
   */
  listen(room, listener) {
    let listeners = this.#listeners.get(room);
    if (listeners === undefined) {
      listeners = new Set();
      this.#listeners.set(room, listeners);
      // Not connected yet (`Disconnected`), the room is joined with the others on
      // connecting, and a refusal then comes to `onError`.
      this.#client.subscribe(room).catch((error) => {
        if (error instanceof RoomRefused) this.#refusedRoom(error);
      });
    } else {
      // Joined already: its subscription is live, as a fresh one's would be.
      queueMicrotask(() => listener.state?.([]));
    }
    listeners.add(listener);
    return () => {
      const now = this.#listeners.get(room);
      if (now === undefined || !now.delete(listener) || now.size > 0) return;
      this.#listeners.delete(room);
      this.#client.unsubscribe(room).catch(() => {}); // not connected: it is not resumed either
    };
  }

  async stop() {
    this.#listeners.clear();
    await this.#client.stop();
  }

  /** @param {RoomRefused} refusal */
  #refusedRoom(refusal) {
    const listeners = this.#listeners.get(refusal.room);
    this.#listeners.delete(refusal.room);
    for (const listener of listeners ?? []) listener.refused?.(refusal.code, refusal.reason);
  }

  /**
   * @param {string} room
   * @param {(listener: Listener) => void} call
   */
  #each(room, call) {
    for (const listener of this.#listeners.get(room) ?? []) call(listener);
  }
}
