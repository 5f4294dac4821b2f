/**
 * The hub's browser client: one resuming connection for players and dashboards, with the
 * behaviour of the Python `hub.client.HubClient`. Every node serves it at `/client.js`.
 *
 * It reconnects on any drop (a node gone, draining with 1012, full with 1013, 1011, 4008,
 * 4009, 4029) with full-jitter exponential backoff over the node URLs it is given, in
 * turn (for a minute after a 1012, doubling only to 5 s: the node comes back soon); it
 * resubscribes every room with the last id it saw and that room's epoch, each room on
 * its own, hands each event to `onEvent` once and in id order, calls `onLost` for
 * a room that could not be recovered, and sends a device's heartbeats on the interval the
 * welcome gives, every frame at the pace the welcome's `limits` allow. A room's current
 * state comes before its other events, to `onState`, or else to `onEvent` flagged
 * `state: true`. The token goes in `?token=` (a browser cannot
 * set headers on a socket); given as a function it is asked again before every connection
 * and when the hub says the socket's token is `expiring`, then handed over the live socket.
 *
 * A browser is never told why a handshake failed (no HTTP status reaches the page), so
 * after a socket that closed before it opened the client asks the node: `GET /v1/ws`
 * without an upgrade answers what the handshake would. A 401 or 403 (a bad or expired
 * token, one the hub cannot use), or a 404 (no socket at that URL), ends `run()` with
 * `HubRefused`, with the status, the hub's code and message; a 429 or 503 (too many
 * handshakes or sockets, a full or draining node), or no answer at all, is retried.
 *
 * When the node says the token would be accepted yet no socket opened, a proxy may be
 * refusing WebSocket upgrades: the client goes on over the event stream (Server-Sent
 * Events in, POSTs out), with every promise above, and tries a WebSocket again every
 * `websocketRetry` ms (5 minutes); `transport` says which carries it. When the stream
 * fails too, the browser is blocking it (Content-Security-Policy, local network access):
 * `refusals` such attempts in a row (3), with no welcome between, end `run()` with
 * `HubRefused` too.
 *
 * An event with `apply_at` later than the hub's clock is held and handed to `onEvent` at
 * that moment of the hub's clock, in `apply_at` order, in turn with the other handlers:
 * the players of a video wall switch together however far apart the frames reached them
 * and however wrong their own clocks are. The client tells the hub's clock (`hubTime()`)
 * from its own by the `time` of each welcome and of each pong, pinging only while it holds
 * events. Held events outlive a reconnect; `stop()`, or leaving their room, drops them. A
 * command's `received` goes when it arrives, its `done` or `failed` after `onEvent` ran.
 *
 *     import { HubClient, socketUrl } from "/client.js";
 *     const client = new HubClient([socketUrl()], token, { rooms: ["status"], onEvent: show });
 *     await client.run();
 *
 * @module
 */

const WELCOME_TIMEOUT = 10_000; // ms an accepted socket may take to send its welcome
const REQUEST_TIMEOUT = 30_000; // ms a subscribe, unsubscribe, publish or refresh may wait
const PROBE_TIMEOUT = 5_000; // ms the handshake probe after a failed handshake may take
// Handshake answers that no retry can change: a token refused, or no socket at that URL.
const REFUSALS = new Set([401, 403, 404]);
const MAX_HELD = 100_000; // events of one room held while its subscribe waits for the ack
const MAX_INBOX = 100_000; // frames waiting for the handlers before the connection is dropped
const MIN_HEARTBEAT_INTERVAL = 100; // ms: a broken welcome cannot make a flood
const MAX_TEXT = 300; // the longest text from the hub kept in an error or a log line
// Subscribe errors a later connection may not get; any other is final.
const TRANSIENT_CODES = new Set(["rate_limited", "unavailable"]);
const ID = /^([0-9]{1,20})-([0-9]{1,20})$/;
// 2**64 - 1 in decimal: ids are compared as digits, not BigInts, which older screens lack.
const MAX_PART = "18446744073709551615";
const NORMAL = 1000;
const CONNECTING = 0; // a socket's readyState before it opens (WebSocket.CONNECTING)
const RESTART = 1012; // a node draining or restarting: it comes back soon
const NO_CLOSE_FRAME = 1006; // a socket refused, or dropped, without a close frame
const WEBSOCKET_RETRY = 300_000; // ms on the event stream between two tries of a WebSocket
const MAX_POST_FRAMES = 100; // client frames one POST to an event stream may carry
const POST_TIMEOUT = 30_000; // ms a POST's frames may take to be taken, retries included
// The longest wait, in seconds, within RESTART_WINDOW ms of a 1012: a backoff that went on
// doubling while a lone node drained and restarted kept its clients away for half a minute.
const RESTART_CAP = 5;
const RESTART_WINDOW = 60_000;
const MAX_SCHEDULED = 1000; // events held for their apply_at; past it, the soonest goes at once
const CLOCK_SAMPLES = 8; // offset samples kept, the welcome's among them
// Ms a sample counts as recent: clocks drift apart (a quartz by up to 50 ppm, 30 ms in ten
// minutes), so an old short round trip loses to a fresh long one.
const CLOCK_WINDOW = 600_000;
const CLOCK_PINGS = 3; // pings in a row of one round: one at least is seldom queued
const CLOCK_PING_INTERVAL = 60_000; // ms between two rounds of pings, while events are held
const MAX_TIMER = 2 ** 31 - 1; // the longest delay setTimeout keeps, ms
/** What a log line must not carry: Unicode's "other" characters (controls, format,
 * surrogates, private use, unassigned). Engines older than Chromium 64 cannot write that
 * class: there, the controls, format characters, lone surrogates and private use it
 * names. */
const CONTROLS = (() => {
  try {
    return new RegExp("[\\p{C}]", "gu");
  } catch {
    return /[\0-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\uf8ff\u{f0000}-\u{10ffff}]/gu;
  }
})();

/** The hub refused something for good: retrying the same thing cannot succeed. */
export class Refused extends Error {
  name = "Refused";
}

/** The hub refused the handshake for good (`status` 401 or 403, with its `code` and
 * `reason`; 404: no socket at that URL), or the browser kept blocking a socket the hub
 * would accept (`status` 0). */
export class HubRefused extends Refused {
  name = "HubRefused";

  /**
   * @param {string} url the node's URL, without its query
   * @param {number} status @param {string | null} code @param {string} reason
   */
  constructor(url, status, code, reason) {
    super(status ? `${url} answered ${status} ${reason}` : `${url}: ${reason}`);
    this.url = url;
    this.status = status;
    this.code = code;
    this.reason = reason;
  }
}

/** A room's subscribe was refused for good (`forbidden`, `bad_request`, `too_large`, ...). */
export class RoomRefused extends Refused {
  name = "RoomRefused";

  /** @param {string} room @param {string} code @param {string} message */
  constructor(room, code, message) {
    super(`subscribe ${room}: ${code}: ${message}`);
    this.room = room;
    this.code = code;
    this.reason = message;
  }
}

/** No connection, or it ended before the answer came: the room is resumed on the next one. */
export class Disconnected extends Error {
  name = "Disconnected";
}

/**
 * The socket URL of the node that served `base` (by default this module): the same host,
 * `ws:` or `wss:` as the page's `http:` or `https:`.
 * @param {string | URL} [base]
 * @returns {string}
 */
export function socketUrl(base = import.meta.url) {
  const url = new URL("v1/ws", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  return url.href;
}

/** One resuming connection to the hub, for players and dashboards. */
export class HubClient extends EventTarget {
  /** @type {string[]} */ #urls;
  /** @type {string | (() => string | Promise<string>)} */ #token;
  /** @type {Map<string, Room>} */ #rooms = new Map();
  #options;
  #log;
  #backoff;
  #soon; // the backoff after a 1012: jittered, and short
  /** When a node last closed a socket with 1012 (`performance.now()`), while every try
   * since ended in 1012 again or in no answer at all. @type {number | null} */
  #restarted = null;
  #refusalLimit;
  /** What carries the connections: "websocket", or "stream" (a proxy refuses WebSockets). */
  #transport = "websocket";
  #websocketRetry;
  #refs = 0;
  #refusals = 0;
  /** @type {Link | null} */ #link = null;
  #connected = false;
  #stopping = false;
  /** @type {Promise<void> | null} */ #running = null;
  /** @type {(() => void) | null} */ #wake = null;
  #clock = new HubClock();
  /** Events that wait for their `apply_at`. */
  #schedule = new Schedule(
    this.#clock,
    (event) => this.#handOver(event),
    (said) => this.#log.warn(`hub client: ${said}`),
  );
  /** Settles once the handlers called so far have returned. @type {Promise<unknown>} */
  #turn = Promise.resolve();
  /** The last welcome frame, or null before the first. @type {Record<string, any> | null} */
  welcome = null;

  /**
   * @param {string | string[]} urls the nodes' `ws://` or `wss://` URLs, tried in turn
   * @param {string | (() => string | Promise<string>)} token a JWT, or a provider of fresh ones
   * @param {HubClientOptions} [options]
   */
  constructor(urls, token, options = {}) {
    super();
    this.#urls = checkedUrls(urls);
    if (typeof token !== "string" && typeof token !== "function") {
      throw new TypeError("token must be a string, or a function that returns one");
    }
    this.#token = token;
    this.#options = options;
    this.#log = options.log ?? console;
    this.#backoff = new Backoff(options.backoff?.base ?? 0.5, options.backoff?.cap ?? 30);
    this.#soon = new Backoff(this.#backoff.base, Math.min(this.#backoff.cap, RESTART_CAP));
    this.#refusalLimit = options.refusals ?? 3;
    this.#websocketRetry = options.websocketRetry ?? WEBSOCKET_RETRY;
    for (const room of options.rooms ?? []) this.#rooms.set(room, newRoom());
  }

  /**
   * What carries the connection: "websocket", or "stream" when WebSockets do not get
   * through (a proxy that refuses upgrades) and the event stream does.
   * @returns {"websocket" | "stream"}
   */
  get transport() {
    return /** @type {"websocket" | "stream"} */ (this.#transport);
  }

  /** True from the moment every room is resumed on a connection until it ends. */
  get connected() {
    return this.#connected;
  }

  /** The rooms the client keeps, its own ones included. @returns {string[]} */
  get rooms() {
    return [...this.#rooms.keys()];
  }

  /**
   * The hub's clock as the client tells it from its own, ms since the epoch: the moment
   * events with `apply_at` are handed over. The local clock before the first welcome.
   * @returns {number}
   */
  hubTime() {
    return this.#clock.now();
  }

  /**
   * Stay connected until `stop()`; every connection resumes where the last one ended.
   * Rejects with `HubRefused` when the node keeps refusing the socket, and with
   * `RoomRefused` when a room is refused and no `onError` was given.
   * @returns {Promise<void>}
   */
  run() {
    if (this.#running !== null) return Promise.reject(new Error("the client is already running"));
    this.#stopping = false;
    this.#refusals = 0;
    this.#running = this.#loop().finally(() => {
      this.#running = null;
    });
    return this.#running;
  }

  /** `run()` in the background; a refusal that ends it goes to `onError`. @returns {this} */
  start() {
    this.run().catch((error) => {
      if (error instanceof Refused && this.#options.onError) {
        void this.#call(this.#options.onError, error);
      } else {
        this.#log.error("hub client stopped:", error);
      }
    });
    return this;
  }

  /** Close the connection and stop reconnecting; resolves once `run()` has ended. The
   * events held for their `apply_at` are dropped: the application is going away. */
  async stop() {
    this.#stopping = true;
    this.#wake?.();
    this.#link?.end("stopped");
    await this.#running?.catch(() => {});
    this.#schedule.drop();
  }

  /** Resolves with the welcome once the client is connected (at once if it is); rejects
   * with the refusal that ends `run()` first. */
  whenConnected() {
    if (this.#connected) return Promise.resolve(this.welcome);
    return new Promise((resolve, reject) => {
      const connected = () => resolve(this.welcome);
      this.addEventListener("connected", connected, { once: true });
      this.#running?.catch((error) => {
        this.removeEventListener("connected", connected);
        reject(error);
      });
    });
  }

  /**
   * Join `room` and keep it across reconnects; resolves with the ack. Rejects with
   * `RoomRefused` (the room is dropped) or `Disconnected` (it is resumed on the next
   * connection). Called from a handler, do not await it: its ack waits behind the handler.
   * @param {string} room
   */
  async subscribe(room) {
    if (!this.#rooms.has(room)) this.#rooms.set(room, newRoom());
    const link = this.#live();
    try {
      return await this.#resume(link, room);
    } catch (error) {
      if (error instanceof Disconnected) link.end(error.message);
      throw error;
    }
  }

  /** Leave `room` and stop resuming it. @param {string} room */
  async unsubscribe(room) {
    this.#rooms.delete(room);
    this.#schedule.drop(room);
    return this.#request(this.#live(), { op: "unsubscribe", room });
  }

  /**
   * Publish an event over the socket (the token's `publish` claim must allow the room);
   * resolves with the hub's answer, an `ack` with `id` or an `error`.
   * @param {string} room @param {string} event @param {Record<string, any>} data
   */
  async publish(room, event, data) {
    return this.#request(this.#live(), { op: "publish", room, event, data });
  }

  /**
   * Tell the hub what became of `event` here: `received`, `done` or `failed`. Sent without
   * waiting for the answer, so a handler may call it; a refusal is logged. Throws
   * `Disconnected` when not connected.
   * @param {{room?: string, id?: string}} event
   * @param {"received" | "done" | "failed"} status
   * @param {Record<string, any>} [data]
   */
  receipt(event, status, data) {
    const frame = { op: "receipt", room: event.room, id: event.id, status };
    this.#live().send(data === undefined ? frame : { ...frame, data });
  }

  async #loop() {
    for (let attempt = 0; ; attempt++) {
      if (this.#stopping) return;
      const ended = await this.#attempt(this.#urls[attempt % this.#urls.length]);
      if (this.#stopping) return;
      // Within a minute of a 1012, while the tries end in 1012 again or in no answer, the
      // node is restarting: short waits. Any other answer ends that, and the backoff,
      // which counted every try meanwhile, goes on doubling from where it stands.
      const later = this.#backoff.next();
      const restarting =
        this.#restarted !== null && performance.now() - this.#restarted < RESTART_WINDOW;
      const delay = restarting ? this.#soon.next() : later;
      this.#log.warn(`hub client: ${ended}; retrying in ${delay.toFixed(1)} s`);
      this.dispatchEvent(new CustomEvent("disconnected", { detail: { reason: ended, delay } }));
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay * 1000);
        this.#wake = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
      this.#wake = null;
    }
  }

  /** One connection, from handshake to end: how it ended. Refusals for good are thrown. */
  async #attempt(url) {
    const shown = redact(url);
    let token;
    try {
      token = await this.#currentToken();
    } catch (error) {
      return `the token provider failed: ${describe(error)}`;
    }
    if (this.#stopping) return "stopped";
    const socket =
      this.#transport === "stream"
        ? new StreamSocket(streamUrl(url, token), () => link.token)
        : new WebSocket(withToken(url, token));
    const link = new Link(socket, (frame) => this.#process(link, frame), (code) => {
      if (code === RESTART) this.#restarted = performance.now();
      else if (code !== NO_CLOSE_FRAME) this.#restarted = null;
    });
    link.token = token;
    this.#link = link;
    try {
      if (!(await link.opened)) {
        return this.#stopping ? "stopped" : await this.#refusal(url, shown, token);
      }
      await this.#session(link, url);
    } catch (error) {
      if (error instanceof Refused) throw error;
      link.end(describe(error)); // unless it had ended already, which then says why
    } finally {
      this.#link = null;
      this.#connected = false;
      link.end("stopped");
      await link.idle(); // the next connection's handlers never overlap this one's
    }
    return `connection to ${shown} ended: ${link.endedWith}`;
  }

  /**
   * On the event stream, try a WebSocket now and then; once one opens, end the stream:
   * the next connection is a socket, and resumes every room.
   */
  #tryWebSockets(link, url) {
    const timer = setInterval(() => {
      const socket = new WebSocket(withToken(url, link.token));
      socket.onerror = () => {}; // still refused: the stream goes on
      socket.onopen = () => {
        socket.close(NORMAL);
        clearInterval(timer);
        this.#transport = "websocket";
        this.#log.warn("hub client: a WebSocket opens again: leaving the event stream");
        link.end("leaving the event stream for a WebSocket");
      };
    }, this.#websocketRetry);
    void link.closed.then(() => clearInterval(timer));
  }

  async #session(link, url) {
    const welcome = await link.welcomed;
    if (welcome === null) return; // ended before it: `endedWith` says why
    this.welcome = welcome;
    this.#refusals = 0;
    this.#log.info(`hub client: connected to node ${text(welcome.node)} as ${text(welcome.role)}`);
    this.dispatchEvent(new CustomEvent("welcome", { detail: welcome }));
    for (const room of welcome.rooms) if (!this.#rooms.has(room)) this.#rooms.set(room, newRoom());
    this.#beat(link, welcome);
    this.#keepTime(link, welcome);
    if (this.#transport === "stream") this.#tryWebSockets(link, url);
    await Promise.all(this.rooms.map((room) => this.#keep(link, room)));
    this.#backoff.reset();
    this.#soon.reset();
    this.#restarted = null;
    this.#connected = true;
    this.dispatchEvent(new CustomEvent("connected", { detail: welcome }));
    await link.closed;
  }

  /** The socket closed before it opened: ask the node what the handshake answered. */
  async #refusal(url, shown, token) {
    const answer = await probe(url, token);
    if (answer === null) return `cannot connect to ${shown}`;
    this.#restarted = null; // the node answers, and not that it is restarting
    if (REFUSALS.has(answer.status)) {
      throw new HubRefused(shown, answer.status, answer.code, answer.reason);
    }
    if (answer.status !== 200) return `${shown} answered ${answer.status} ${answer.reason}`;
    if (this.#transport === "websocket") {
      // The hub would take the socket, yet none opened: a proxy that refuses upgrades?
      this.#transport = "stream";
      return `${shown} accepts the token, yet no WebSocket opened: trying the event stream`;
    }
    this.#refusals += 1;
    const attempts = `${this.#refusals} of ${this.#refusalLimit}`;
    if (this.#refusals >= this.#refusalLimit) {
      const blocked =
        `the browser blocked ${this.#refusals} sockets in a row that the hub would ` +
        "accept (Content-Security-Policy, local network access?)";
      throw new HubRefused(shown, 0, null, blocked);
    }
    return `${shown} accepts the token, yet the socket failed (${attempts})`;
  }

  /** Resume one room; a refusal for good drops it alone and is reported. */
  async #keep(link, room) {
    if (!this.#rooms.has(room)) return; // unsubscribed meanwhile
    try {
      await this.#resume(link, room);
    } catch (error) {
      if (!(error instanceof RoomRefused) || !this.#options.onError) throw error;
      await this.#call(this.#options.onError, error);
    }
  }

  /** (Re)subscribe from the last id seen; the room's events are held until the ack. */
  async #resume(link, name) {
    const room = /** @type {Room} */ (this.#rooms.get(name));
    /** @type {Record<string, any>} */
    const frame = { op: "subscribe", room: name };
    if (room.last !== null) {
      frame.since = formatId(room.last);
      if (room.epoch !== null) frame.epoch = room.epoch;
    }
    const held = (room.pending = []);
    try {
      return await this.#request(link, frame, (ack) => this.#subscribed(name, room, frame, ack));
    } finally {
      if (room.pending === held) room.pending = null;
    }
  }

  /** A subscribe's answer, in its place among the frames: state, then the held events. */
  async #subscribed(name, room, frame, ack) {
    const held = room.pending ?? [];
    room.pending = null;
    if (ack.type === "error") {
      const code = text(ack.code);
      const message = text(ack.message);
      const said = `subscribe ${name}: ${code}: ${message}`;
      if (TRANSIENT_CODES.has(code)) throw new Disconnected(said);
      if (this.#rooms.get(name) === room) this.#rooms.delete(name);
      throw new RoomRefused(name, code, message);
    }
    const last = typeof ack.last === "string" ? parseId(ack.last) : null;
    const malformed = ack.type !== "ack" || typeof ack.epoch !== "string";
    if (malformed || (ack.last != null && last === null)) {
      throw new Disconnected(`subscribe ${name}: not an ack`);
    }
    const resumed = "since" in frame;
    const recovered = resumed && ack.recovered === true;
    if (resumed && !recovered && this.#options.onLost) await this.#call(this.#options.onLost, name);
    // Ids of another history say nothing about this one: count from scratch.
    if (room.epoch !== null && room.epoch !== ack.epoch) room.last = null;
    room.epoch = ack.epoch;
    room.handed = await this.#handState(name, ack, recovered);
    held.sort((a, b) => compareIds(parseId(a.id), parseId(b.id)));
    for (const event of held) await this.#deliver(room, event);
    // From here on every event counts; an empty room resumes from its beginning.
    if (last !== null && (room.last === null || compareIds(last, room.last) > 0)) room.last = last;
    room.last ??= ["0", "0"];
    return ack;
  }

  /**
   * Hand the room's state over before its other events: to `onState` on every subscribe;
   * without it, to `onEvent` (each flagged `state: true`) unless the room was recovered,
   * whose state the application has seen. Returns the ids handed over, which are not
   * handed over again as events.
   */
  async #handState(name, ack, recovered) {
    const events = Array.isArray(ack.state) ? ack.state.filter(isObject) : [];
    const { onState, onEvent } = this.#options;
    if (onState) {
      await this.#call(onState, name, events);
    } else if (onEvent && !recovered) {
      for (const event of events) await this.#schedule.hand({ ...event, state: true });
    } else {
      return new Set();
    }
    return new Set(events.map((event) => event.id).filter((id) => parseId(id) !== null));
  }

  /** Hand an event on once: anything at or below the last id seen is a repeat. A
   * command's `received` goes at once, though the event may wait for its `apply_at`. */
  async #deliver(room, event) {
    const id = parseId(event.id);
    if (id !== null) {
      if (room.last !== null && compareIds(id, room.last) <= 0) return;
      room.last = id;
      if (room.handed.has(event.id)) return; // already handed over as the room's state
    }
    if (!this.#options.onEvent) return;
    if (this.#acknowledged(event)) this.#tryReceipt(event, "received");
    await this.#schedule.hand(event);
  }

  /** Run `onEvent`, on arrival or at `apply_at`, in turn with the other handlers; then a
   * command's `done` or `failed`. */
  #handOver(event) {
    return this.#inTurn(async () => {
      const { onEvent } = this.#options;
      if (!onEvent) return;
      const ran = await this.#invoke(onEvent, event);
      if (this.#acknowledged(event)) this.#tryReceipt(event, ran ? "done" : "failed");
    });
  }

  /** Whether `event` gets receipts: a command with an id, not a room's state. */
  #acknowledged(event) {
    return (
      this.#options.acknowledgeCommands === true &&
      event.event === "command" &&
      parseId(event.id) !== null &&
      event.state !== true
    );
  }

  #tryReceipt(event, status) {
    try {
      this.receipt(event, status);
    } catch (error) {
      this.#log.warn(`hub client: no ${status} receipt for ${text(event.id)}: ${describe(error)}`);
    }
  }

  /** One frame after the welcome, in order: events, subscribe answers, notices. */
  async #process(link, frame) {
    if (frame.type === "event") {
      const room = typeof frame.room === "string" ? this.#rooms.get(frame.room) : undefined;
      if (room === undefined) return;
      if (room.pending === null) return this.#deliver(room, frame);
      if (room.pending.length >= MAX_HELD) {
        return link.end(`more than ${MAX_HELD} events of ${text(frame.room)} before its ack`);
      }
      room.pending.push(frame);
    } else if (link.answers(frame)) {
      await link.settle(frame);
    } else if (frame.type === "expiring") {
      void this.#refresh(link, frame.exp); // the provider may take its time: frames go on
    } else if (frame.type === "error" && frame.ref == null) {
      const said = `${text(frame.code)}: ${text(frame.message)}`;
      this.#log.warn(`hub client: the hub refused a heartbeat or a receipt: ${said}`);
    }
  }

  /**
   * Send a request and wait for its answer; `answer` turns it into the result, in the
   * answer's place among the frames (only subscribes need that).
   */
  #request(link, frame, answer = undefined) {
    const ref = ++this.#refs;
    const reply = link.expect(ref, `${frame.op} ${frame.room ?? ""}`.trim(), answer);
    link.send({ ...frame, ref }, ref);
    return reply;
  }

  /** The live connection, or `Disconnected`. */
  #live() {
    const link = this.#link;
    if (link === null || link.welcome === null || link.endedWith !== null) {
      throw new Disconnected("not connected");
    }
    return link;
  }

  async #currentToken() {
    const token = typeof this.#token === "function" ? await this.#token() : this.#token;
    if (typeof token !== "string" || token === "") throw new TypeError("no token (not a string)");
    return token;
  }

  /**
   * Hand the hub a fresh token before the socket's expires; without a provider, or when
   * the hub refuses it, the socket closes at `exp` and the next connection asks again.
   */
  async #refresh(link, exp) {
    if (typeof this.#token !== "function") {
      this.#log.warn(`hub client: the token expires at ${text(exp)}, and no provider was given`);
      return;
    }
    try {
      const token = await this.#currentToken();
      if (token === link.token) {
        // Each token gets its own notice: sending the same one again would loop until `exp`.
        this.#log.warn(`hub client: the provider gave the same token, expiring at ${text(exp)}`);
        return;
      }
      const answer = await this.#request(link, { op: "refresh", token });
      if (answer.type === "ack") {
        link.token = token;
      } else {
        const said = `${text(answer.code)}: ${text(answer.message)}`;
        this.#log.warn(`hub client: token refresh refused: ${said}`);
      }
    } catch (error) {
      if (!(error instanceof Disconnected)) {
        this.#log.warn(`hub client: token refresh failed: ${describe(error)}`);
      }
    }
  }

  /**
   * The welcome's clock sample; then, while events wait for their `apply_at`, rounds of
   * pings over this connection: one as soon as an event is held, then one every
   * CLOCK_PING_INTERVAL, each moving the wake-up to the new estimate.
   */
  #keepTime(link, welcome) {
    this.#clock.welcomed(welcome);
    let pinged = false;
    const round = async () => {
      if (this.#schedule.size === 0 || link.endedWith !== null) return;
      pinged = true;
      try {
        for (let n = 0; n < CLOCK_PINGS; n++) {
          const sent = Date.now();
          const pong = await this.#request(link, { op: "ping" });
          if (pong.type === "pong") this.#clock.answered(pong.time, sent, Date.now());
        }
      } catch {
        return; // the connection ended: the next one pings again
      }
      this.#schedule.arm();
    };
    this.#schedule.onHold = () => {
      if (!pinged) void round();
    };
    link.every(CLOCK_PING_INTERVAL, () => void round());
    void round();
  }

  /** A device's heartbeats, on the welcome's interval, until the connection ends. */
  #beat(link, welcome) {
    if (welcome.role !== "device") return;
    const beat = async () => {
      let data;
      try {
        data = this.#options.heartbeat ? await this.#options.heartbeat() : { status: "ok" };
      } catch (error) {
        this.#log.error("hub client: heartbeat callback failed, no heartbeat this time:", error);
        return;
      }
      link.send({ op: "heartbeat", data });
    };
    void beat();
    link.every(Math.max(MIN_HEARTBEAT_INTERVAL, welcome.heartbeat.interval * 1000), beat);
  }

  /** Run a user handler in its turn; its failure is logged (and returned as false), never
   * the end of the connection. */
  #call(handler, ...args) {
    return this.#inTurn(() => this.#invoke(handler, ...args));
  }

  /**
   * Run `work` once the handlers called before it have returned: never two at a time, even
   * when a held event comes due while a frame is handled. `work` must not throw.
   * @template T @param {() => Promise<T>} work @returns {Promise<T>}
   */
  #inTurn(work) {
    const turn = this.#turn.then(work);
    this.#turn = turn;
    return turn;
  }

  /** @returns {Promise<boolean>} whether the handler returned without throwing */
  async #invoke(handler, ...args) {
    try {
      await handler(...args);
      return true;
    } catch (error) {
      this.#log.error("hub client: handler failed:", error);
      return false;
    }
  }
}

/**
 * One WebSocket's life: open, welcome, frames queued for the client in arrival order, the
 * requests waiting for answers, and its end (once, with why).
 */
class Link {
  /** @type {Record<string, any> | null} */ welcome = null;
  /** @type {string | null} */ endedWith = null;
  /** The token the hub holds for this socket. */ token = "";
  /** @type {Map<number, Waiter>} */ #waiting = new Map();
  /** @type {Record<string, any>[]} */ #inbox = [];
  #head = 0;
  /** @type {Promise<void> | null} */ #draining = null;
  #timers = { welcome: 0, pace: 0 };
  /** @type {ReturnType<typeof setInterval>[]} */ #intervals = [];
  /** @type {{text: string, ref: number | null}[]} frames waiting for their turn at the
   * welcome's pace, each with the request it makes */ #outbox = [];
  /** @type {Pace | null} */ #pace = null;
  #resolve;

  /**
   * @param {WebSocket | StreamSocket} socket
   * @param {(frame: Record<string, any>) => Promise<void> | void} handle
   * @param {(code: number) => void} closed told the close code, if the socket closes
   */
  constructor(socket, handle, closed) {
    const settle = {};
    this.opened = new Promise((resolve) => (settle.opened = resolve));
    this.welcomed = new Promise((resolve) => (settle.welcomed = resolve));
    this.closed = new Promise((resolve) => (settle.closed = resolve));
    this.#resolve = settle;
    this.handle = handle;
    this.ws = socket;
    this.ws.onopen = () => {
      settle.opened(true);
      this.#timers.welcome = setTimeout(() => this.end("no welcome within 10 s"), WELCOME_TIMEOUT);
    };
    this.ws.onmessage = (message) => this.#receive(message.data);
    this.ws.onclose = (event) => {
      closed(event.code);
      this.end(`closed ${event.code} ${text(event.reason)}`.trimEnd());
    };
    this.ws.onerror = () => {}; // a close follows, and says more
  }

  /**
   * Send at the pace the welcome gave, in order: a client resubscribing more rooms than
   * the hub's burst would otherwise be refused past it, and closed. A request's wait for
   * its answer starts once it is sent, not while it waits its turn.
   * @param {Record<string, any>} frame
   * @param {number | null} ref the request `frame` makes, if it makes one
   */
  send(frame, ref = null) {
    if (this.endedWith !== null) return;
    this.#outbox.push({ text: JSON.stringify(frame), ref });
    if (this.#timers.pace === 0) this.#flush();
  }

  #flush() {
    this.#timers.pace = 0;
    while (this.#outbox.length > 0 && this.endedWith === null) {
      const wait = this.#pace === null ? 0 : this.#pace.take();
      if (wait > 0) {
        this.#timers.pace = setTimeout(() => this.#flush(), wait * 1000);
        return;
      }
      const { text, ref } = /** @type {{text: string, ref: number | null}} */ (
        this.#outbox.shift()
      );
      this.ws.send(text);
      if (ref !== null) this.#arm(ref);
    }
  }

  /** The request `ref` is sent: from now on it waits REQUEST_TIMEOUT for its answer. */
  #arm(ref) {
    const waiter = this.#waiting.get(ref);
    if (waiter === undefined) return;
    waiter.timer = setTimeout(() => {
      this.#waiting.delete(ref);
      const said = `no answer to ${waiter.what} within ${REQUEST_TIMEOUT / 1000} s`;
      waiter.reject(new Disconnected(said));
    }, REQUEST_TIMEOUT);
  }

  /** Call `callback` every `ms` until the connection ends. */
  every(ms, callback) {
    if (this.endedWith === null) this.#intervals.push(setInterval(callback, ms));
  }

  /**
   * A promise of the answer to request `ref`, settled through `answer` when given; it
   * waits REQUEST_TIMEOUT from when `send` sends the request.
   */
  expect(ref, what, answer) {
    if (this.endedWith !== null) return Promise.reject(new Disconnected("not connected"));
    return new Promise((resolve, reject) => {
      const ordered = answer !== undefined;
      this.#waiting.set(ref, { ordered, what, answer, resolve, reject, timer: undefined });
    });
  }

  /** Whether `frame` answers a request that waits for it in order. */
  answers(frame) {
    return this.#waiting.get(frame.ref)?.ordered === true;
  }

  async settle(frame) {
    const waiter = this.#waiting.get(frame.ref);
    if (waiter === undefined) return;
    this.#waiting.delete(frame.ref);
    clearTimeout(waiter.timer);
    try {
      waiter.resolve(waiter.answer ? await waiter.answer(frame) : frame);
    } catch (error) {
      waiter.reject(error);
    }
  }

  /** End the connection now (later events are ignored), saying why; the first reason wins. */
  end(reason) {
    if (this.endedWith !== null) return;
    this.endedWith = reason;
    clearTimeout(this.#timers.welcome);
    for (const interval of this.#intervals) clearInterval(interval);
    clearTimeout(this.#timers.pace);
    this.#outbox = [];
    for (const waiter of this.#waiting.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new Disconnected("connection lost"));
    }
    this.#waiting.clear();
    this.#resolve.opened(false);
    this.#resolve.welcomed(null);
    this.#resolve.closed(reason);
    if (this.ws.readyState === CONNECTING) {
      // Closing a socket still connecting makes the browser log an error: close it once open.
      this.ws.onopen = () => this.ws.close(NORMAL);
    } else {
      this.ws.close(NORMAL);
    }
  }

  /** Resolves once no frame of this connection is being handled. */
  idle() {
    return this.#draining ?? Promise.resolve();
  }

  #receive(data) {
    if (this.endedWith !== null) return;
    const frame = parseFrame(data);
    if (typeof frame === "string") return this.end(frame);
    if (this.welcome === null) {
      const problem = welcomeProblem(frame);
      if (problem !== null) return this.end(problem);
      clearTimeout(this.#timers.welcome);
      this.welcome = frame;
      this.#pace = Pace.of(frame.limits);
      return this.#resolve.welcomed(frame);
    }
    const waiter = typeof frame.ref === "number" ? this.#waiting.get(frame.ref) : undefined;
    if (waiter !== undefined && !waiter.ordered) return void this.settle(frame); // needs no order
    if (this.#inbox.length - this.#head >= MAX_INBOX) {
      return this.end(`more than ${MAX_INBOX} frames waiting for the handlers`);
    }
    this.#inbox.push(frame);
    this.#draining ??= this.#drain();
  }

  /** Hand the queued frames on one at a time, each after the previous one's handlers. */
  async #drain() {
    try {
      while (this.#head < this.#inbox.length && this.endedWith === null) {
        const frame = this.#inbox[this.#head];
        this.#inbox[this.#head++] = undefined;
        if (this.#head >= 1024 && this.#head * 2 >= this.#inbox.length) {
          this.#inbox = this.#inbox.slice(this.#head); // a busy queue never empties: compact it
          this.#head = 0;
        }
        try {
          await this.handle(frame);
        } catch (error) {
          this.end(describe(error));
        }
      }
    } finally {
      this.#inbox = [];
      this.#head = 0;
      this.#draining = null;
    }
  }
}

/**
 * An event stream with the part of a WebSocket that `Link` uses, for networks whose
 * proxies refuse WebSocket upgrades: frames come as Server-Sent Events, frames go as
 * POSTs, one at a time and in order, each with every frame queued meanwhile. A POST
 * carries its token in the query and its body as text/plain, so a page of another origin
 * sends it without a preflight. The hub's `close` event closes it as a close frame would.
 */
class StreamSocket {
  readyState = CONNECTING;
  /** @type {(() => void) | null} */ onopen = null;
  /** @type {((message: {data: string}) => void) | null} */ onmessage = null;
  /** @type {((event: {code: number, reason: string}) => void) | null} */ onclose = null;
  /** @type {(() => void) | null} */ onerror = null;
  #source;
  #url;
  /** @type {string | null} where the frames go, from the welcome */ #post = null;
  /** @type {string[]} */ #outbox = [];
  #posting = false;
  #token;

  /** @param {string} url the node's `/v1/stream?token=` @param {() => string} token */
  constructor(url, token) {
    this.#url = url;
    this.#token = token;
    this.#source = new EventSource(url);
    this.#source.onopen = () => {
      this.readyState = 1;
      if (this.onopen) this.onopen();
    };
    this.#source.onmessage = (message) => {
      if (this.#post === null) {
        try {
          this.#post = new URL(JSON.parse(message.data).stream.post, this.#url).href;
        } catch {
          return this.#closed(NO_CLOSE_FRAME, "the stream's welcome says nowhere to send");
        }
      }
      if (this.onmessage) this.onmessage({ data: message.data });
    };
    this.#source.addEventListener("close", (message) => {
      let said = {};
      try {
        said = JSON.parse(/** @type {MessageEvent} */ (message).data);
      } catch {}
      const code = typeof said.code === "number" ? said.code : NO_CLOSE_FRAME;
      this.#closed(code, typeof said.reason === "string" ? said.reason : "");
    });
    // EventSource would reconnect by itself, without resuming: the client does that.
    this.#source.onerror = () => this.#closed(NO_CLOSE_FRAME, "");
  }

  /** @param {string} frame */
  send(frame) {
    if (this.readyState !== 1) return;
    this.#outbox.push(frame);
    if (!this.#posting) void this.#flush();
  }

  close(code = NORMAL) {
    this.#closed(code, "");
  }

  async #flush() {
    this.#posting = true;
    try {
      while (this.#outbox.length > 0 && this.readyState === 1) {
        const batch = this.#outbox.splice(0, MAX_POST_FRAMES);
        if (!(await this.#deliver(`[${batch.join(",")}]`))) {
          this.#closed(NO_CLOSE_FRAME, "frames not taken");
        }
      }
    } finally {
      this.#posting = false;
    }
  }

  /** POST until the session takes the frames: what may pass (429, a node or the balancer
   * failing, a lost connection) is tried again within POST_TIMEOUT; false otherwise. */
  async #deliver(body) {
    const deadline = Date.now() + POST_TIMEOUT;
    let wait = 100;
    for (;;) {
      let status = 0;
      try {
        const target = new URL(/** @type {string} */ (this.#post));
        target.searchParams.set("token", this.#token());
        const answer = await fetch(target.href, {
          method: "POST",
          body,
          headers: { "Content-Type": "text/plain" },
          cache: "no-store",
          credentials: "omit",
        });
        status = answer.status;
      } catch {}
      if (status === 202) return true;
      if (status !== 0 && status !== 429 && status < 500) return false;
      if (this.readyState !== 1 || Date.now() + wait > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 2000);
    }
  }

  #closed(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.#source.close();
    this.#outbox = [];
    if (this.onclose) this.onclose({ code, reason });
  }
}

/**
 * A token bucket within the hub's: its rate, and half its burst, which leaves the other
 * half for frames the network bunches together and for the browser's own pings.
 */
class Pace {
  /** @param {number} rate @param {number} burst */
  constructor(rate, burst) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.stamp = performance.now();
  }

  /** None when the hub sets no rate (or, older, does not say). */
  static of(limits) {
    return isObject(limits) && limits.rate > 0
      ? new Pace(limits.rate, Math.max(1, Math.floor(limits.burst / 2)))
      : null;
  }

  /** Take a token: 0 when granted, else the seconds until one is there. */
  take() {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.stamp) / 1000) * this.rate);
    this.stamp = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return (1 - this.tokens) / this.rate;
  }
}

/** Full-jitter exponential backoff, in seconds: a crowd reconnects spread, not in waves. */
class Backoff {
  attempt = 0;

  constructor(base, cap) {
    this.base = base;
    this.cap = cap;
  }

  next() {
    const ceiling = Math.min(this.cap, this.base * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 32);
    return Math.random() * ceiling;
  }

  reset() {
    this.attempt = 0;
  }
}

/**
 * The hub's clock as the client tells it: the local clock plus the offset of the best
 * recent sample. Each welcome and each pong carries the hub's `time`; a pong's counts from
 * halfway through its round trip, so its error is at most half of it, and of the recent
 * samples the one with the shortest round trip wins (a welcome's is unknown: it loses to
 * any pong's). With none recent, the newest; with none at all, the local clock as it is.
 */
class HubClock {
  /** @type {{offset: number, roundTrip: number, taken: number}[]} */ #samples = [];

  now() {
    return Date.now() + this.offset;
  }

  /** Ms to add to the local clock to read the hub's. */
  get offset() {
    const samples = this.#samples;
    if (samples.length === 0) return 0;
    const now = Date.now();
    const recent = samples.filter((sample) => now - sample.taken <= CLOCK_WINDOW);
    if (recent.length === 0) return samples[samples.length - 1].offset;
    // The newest of equals: welcomes' round trips are all unknown.
    return recent.reduce((best, sample) => (sample.roundTrip <= best.roundTrip ? sample : best))
      .offset;
  }

  /** @param {Record<string, any>} welcome */
  welcomed(welcome) {
    const received = Date.now();
    if (isTime(welcome.time)) this.#add(welcome.time - received, Infinity, received);
  }

  /** A pong's `time`, for a ping sent and answered at those local times: the hub read its
   * clock somewhere in between, best guessed halfway. */
  answered(time, sent, received) {
    if (isTime(time) && received >= sent) {
      this.#add(time - (sent + received) / 2, received - sent, received);
    }
  }

  #add(offset, roundTrip, taken) {
    this.#samples.push({ offset, roundTrip, taken });
    if (this.#samples.length > CLOCK_SAMPLES) this.#samples.shift();
  }
}

/**
 * Events held until their `apply_at` by the hub's clock, then handed over in that order.
 * One without `apply_at`, or with one already past, is handed over at once. Past
 * MAX_SCHEDULED held events, the one due soonest is handed over at once rather than lost.
 * Each new clock sample moves the wake-up (`arm`) to the new estimate.
 */
class Schedule {
  /** Sorted by `at`, then arrival. @type {{at: number, event: Record<string, any>}[]} */
  #held = [];
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #timer = undefined;
  #handing = false;
  /** Told each time an event is held: the connection pings for the hub's clock. */
  onHold = () => {};

  /**
   * @param {HubClock} clock
   * @param {(event: Record<string, any>) => Promise<void>} deliver must not throw
   * @param {(said: string) => void} warn
   */
  constructor(clock, deliver, warn) {
    this.clock = clock;
    this.deliver = deliver;
    this.warn = warn;
  }

  get size() {
    return this.#held.length;
  }

  /** Hand `event` over now, or hold it until its `apply_at`. @param {Record<string, any>} event */
  async hand(event) {
    const at = isTime(event.apply_at) ? event.apply_at : null;
    if (at === null || at <= this.clock.now()) return this.deliver(event);
    let place = this.#held.length;
    while (place > 0 && this.#held[place - 1].at > at) place--;
    this.#held.splice(place, 0, { at, event });
    const soonest = this.#held.length > MAX_SCHEDULED ? this.#held.shift() : undefined;
    this.arm();
    this.onHold();
    if (soonest !== undefined) {
      this.warn(`more than ${MAX_SCHEDULED} events wait for their apply_at: one goes early`);
      await this.deliver(soonest.event);
    }
  }

  /** Forget the held events (of `room` only, when given). @param {string} [room] */
  drop(room) {
    this.#held = room === undefined ? [] : this.#held.filter(({ event }) => event.room !== room);
    this.arm();
  }

  /** Wake up when the soonest held event is due, by the current estimate. */
  arm() {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#held.length === 0) return;
    const delay = Math.min(MAX_TIMER, Math.max(0, this.#held[0].at - this.clock.now()));
    this.#timer = setTimeout(() => void this.#handDue(), delay);
  }

  /** Hand over every held event now due, in `apply_at` order, then wait for the next. */
  async #handDue() {
    this.#timer = undefined;
    if (this.#handing) return; // the one handing over sees it, and arms again
    this.#handing = true;
    try {
      while (this.#held.length > 0 && this.#held[0].at <= this.clock.now()) {
        const { event } = /** @type {{event: Record<string, any>}} */ (this.#held.shift());
        await this.deliver(event);
      }
    } finally {
      this.#handing = false;
    }
    this.arm();
  }
}

/**
 * @typedef {object} HubClientOptions
 * @property {Iterable<string>} [rooms] rooms to keep besides a device's own (the welcome's)
 * @property {(event: HubEvent) => void | Promise<void>} [onEvent] each event, once, in id order
 * @property {(room: string, events: HubEvent[]) => void | Promise<void>} [onState] a room's
 *   current state, on every (re)subscribe, before its other events
 * @property {(room: string) => void | Promise<void>} [onLost] a room was not recovered:
 *   events may be missing, resynchronise it
 * @property {(error: Refused) => void | Promise<void>} [onError] a room refused for good
 *   (`RoomRefused`), or, from `start()`, the refusal that ended the client
 * @property {() => Record<string, any> | Promise<Record<string, any>>} [heartbeat] a
 *   device's heartbeat data (default `{status: "ok"}`)
 * @property {boolean} [acknowledgeCommands] a device sends `received` for each `command`
 *   before `onEvent`, `done` or `failed` (it threw) after
 * @property {{base?: number, cap?: number}} [backoff] seconds (0.5, 30)
 * @property {number} [refusals] refused sockets in a row that end `run()` (3)
 * @property {number} [websocketRetry] ms on the event stream between two tries of a
 *   WebSocket (300000)
 * @property {Pick<Console, "info" | "warn" | "error">} [log] where it logs (`console`)
 *
 * @typedef {Record<string, any> & {type: "event", room: string, event: string, data: any,
 *   ts: number, id?: string, state?: true}} HubEvent
 *
 * @typedef {object} Room What the client knows of one room.
 * @property {[string, string] | null} last the last id seen, each part in decimal
 * @property {string | null} epoch
 * @property {Record<string, any>[] | null} pending events held until the subscribe's ack
 * @property {Set<string>} handed ids handed over as the room's state
 *
 * @typedef {object} Waiter A request waiting for its answer.
 * @property {boolean} ordered whether it is settled in its place among the frames
 * @property {string} what the request, for a timeout's message
 * @property {((frame: Record<string, any>) => any) | undefined} answer
 * @property {(value: any) => void} resolve
 * @property {(error: any) => void} reject
 * @property {ReturnType<typeof setTimeout> | undefined} timer from its sending on
 */

/** @returns {Room} */
function newRoom() {
  return { last: null, epoch: null, pending: null, handed: new Set() };
}

function checkedUrls(urls) {
  const list = typeof urls === "string" ? [urls] : Array.from(urls ?? []);
  if (list.length === 0) throw new TypeError("give at least one URL (ws://host:port/v1/ws)");
  for (const url of list) {
    let protocol = null;
    try {
      protocol = new URL(url).protocol;
    } catch {
      // reported below
    }
    if (protocol !== "ws:" && protocol !== "wss:") {
      throw new TypeError(`not a WebSocket URL: ${redact(String(url))}`);
    }
  }
  return list;
}

function withToken(url, token) {
  const parsed = new URL(url);
  parsed.searchParams.set("token", token);
  return parsed.href;
}

/** A node's socket URL as its event stream's, with the token. */
function streamUrl(url, token) {
  const parsed = new URL(withToken(url, token));
  parsed.protocol = parsed.protocol === "wss:" ? "https:" : "http:";
  parsed.pathname = "/v1/stream";
  parsed.hash = "";
  return parsed.href;
}

/** A URL fit for a log line: no query string, where a token may be. */
function redact(url) {
  try {
    const parsed = new URL(url);
    parsed.search = "";
    parsed.hash = "";
    return parsed.href;
  } catch {
    return "(not a URL)";
  }
}

/**
 * What the handshake at a socket URL answers with this token, asked over plain HTTP (the
 * node answers `GET /v1/ws` without an upgrade as the upgrade would, readable by any
 * page): `{status, code, reason}`, or null when nothing readable came back.
 */
async function probe(url, token) {
  const asked = new URL(withToken(url, token));
  asked.protocol = asked.protocol === "wss:" ? "https:" : "http:";
  asked.hash = "";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), PROBE_TIMEOUT);
  try {
    const answer = await fetch(asked, {
      cache: "no-store",
      credentials: "omit",
      signal: controller.signal,
    });
    const body = await answer.json().catch(() => null);
    const said = body?.error;
    return {
      status: answer.status,
      code: typeof said?.code === "string" ? text(said.code) : null,
      reason: typeof said?.message === "string" ? text(said.message) : text(answer.statusText),
    };
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

/** A frame from the hub, or why it is not one. */
function parseFrame(data) {
  if (typeof data !== "string") return "the hub sent a binary frame";
  try {
    const frame = JSON.parse(data);
    return isObject(frame) ? frame : "the hub sent a frame that is not a JSON object";
  } catch {
    return "the hub sent a frame that is not JSON";
  }
}

/** What is wrong with a welcome for what the client relies on, or null. */
function welcomeProblem(frame) {
  if (frame.type !== "welcome") return `expected a welcome, got ${text(frame.type)}`;
  frame.rooms ??= [];
  if (!Array.isArray(frame.rooms) || !frame.rooms.every((room) => typeof room === "string")) {
    return "malformed welcome: rooms must be a list of names";
  }
  if (typeof frame.role !== "string") return "malformed welcome: no role";
  const interval = frame.heartbeat?.interval;
  if (frame.role === "device" && !(Number.isFinite(interval) && interval > 0)) {
    return "malformed welcome: heartbeat.interval must be a positive number";
  }
  const limits = frame.limits;
  const rate = limits?.rate;
  const burst = limits?.burst;
  if (
    limits !== undefined &&
    !(isObject(limits) && Number.isFinite(rate) && rate >= 0 && Number.isFinite(burst) && burst > 0)
  ) {
    return "malformed welcome: limits needs a rate of 0 or more and a positive burst";
  }
  return null;
}

/** A time in ms, as the hub writes one. */
function isTime(value) {
  return typeof value === "number" && Number.isFinite(value);
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `<ms>-<seq>` as a pair of integers (decimal, no leading zeros), or null when it is not
 * an id. */
function parseId(value) {
  const match = typeof value === "string" ? ID.exec(value) : null;
  if (match === null) return null;
  const pair = /** @type {[string, string]} */ ([integer(match[1]), integer(match[2])]);
  return comparePart(pair[0], MAX_PART) > 0 || comparePart(pair[1], MAX_PART) > 0 ? null : pair;
}

function integer(digits) {
  return digits.replace(/^0+(?=.)/, "");
}

/** Order of two integers written in decimal without leading zeros. */
function comparePart(a, b) {
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a === b ? 0 : a < b ? -1 : 1;
}

function formatId(pair) {
  return `${pair[0]}-${pair[1]}`;
}

/** Order of two ids; one that is not an id comes first. */
function compareIds(a, b) {
  if (a === null || b === null) return (a === null ? 0 : 1) - (b === null ? 0 : 1);
  return comparePart(a[0], b[0]) || comparePart(a[1], b[1]);
}

/** Something the hub said, made safe for one log line: a string, short, no controls. */
function text(value) {
  const said = (typeof value === "string" ? value : String(value)).replace(CONTROLS, " ");
  return said.length <= MAX_TEXT ? said : `${said.slice(0, MAX_TEXT - 3)}...`;
}

function describe(error) {
  return text(error instanceof Error ? error.message || error.name : error);
}
