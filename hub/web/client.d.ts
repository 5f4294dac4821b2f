/**
 * The hub's browser client, served by every node at `/client.js`: one resuming connection
 * for players and dashboards (see the module's comment in client.js, and docs/protocol.md).
 */

/** An event frame as the hub sends it; `state: true` when handed over as a room's state. */
export interface HubEvent {
  type: "event";
  room: string;
  event: string;
  data: any;
  /** ms since the epoch, when the hub accepted the publish */
  ts: number;
  /** `<ms>-<seq>`; absent only in rooms without history */
  id?: string;
  /** ms since the epoch, by the hub's clock: the moment `onEvent` gets the event */
  apply_at?: number;
  /** ms since the epoch: after it the event is not replayed, nor in history, nor state */
  expires?: number;
  state?: true;
  [field: string]: unknown;
}

/** The first frame of every connection. */
export interface Welcome {
  type: "welcome";
  v: number;
  conn: string;
  node: string;
  role: "device" | "dashboard" | "operator" | "admin";
  sub: string;
  tenant: string | null;
  /** the rooms joined automatically (a device's own) */
  rooms: string[];
  /** seconds */
  heartbeat: { interval: number; timeout: number };
  /** frames per second the socket may send (0: no limit) and its burst; the client paces
   * itself within them */
  limits?: { rate: number; burst: number };
  /** the hub's clock, ms since the epoch, for the client to tell its own clock's offset */
  time?: number;
  state?: Record<string, HubEvent[]>;
  /** on an event stream only: its session, and where its frames are POSTed */
  stream?: { session: string; post: string };
  [field: string]: unknown;
}

/** An answer to a request: an `ack` (with `id` for a publish) or an `error`. */
export interface Answer {
  type: "ack" | "error";
  ref: number | string | null;
  code?: string;
  message?: string;
  [field: string]: unknown;
}

/** A subscribe's ack. */
export interface SubscribeAck extends Answer {
  type: "ack";
  room: string;
  recovered: boolean;
  epoch: string;
  last: string | null;
  state: HubEvent[];
}

export type TokenSource = string | (() => string | Promise<string>);

export interface HubClientOptions {
  /** rooms to keep besides a device's own (those come with the welcome) */
  rooms?: Iterable<string>;
  /** each event, once and in id order per room (one with `apply_at` at that moment of the
   * hub's clock, in `apply_at` order); handlers run one at a time */
  onEvent?: (event: HubEvent) => void | Promise<void>;
  /** a room's current state on every (re)subscribe, before its other events */
  onState?: (room: string, events: HubEvent[]) => void | Promise<void>;
  /** a room could not be recovered: events may be missing, resynchronise it */
  onLost?: (room: string) => void | Promise<void>;
  /** a room refused for good (`RoomRefused`: the other rooms stay live), or, from
   * `start()`, the refusal that ended the client */
  onError?: (error: Refused) => void | Promise<void>;
  /** a device's heartbeat data, asked each interval (default `{status: "ok"}`) */
  heartbeat?: () => Record<string, unknown> | Promise<Record<string, unknown>>;
  /** a device sends `received` for each `command` before `onEvent`, then `done`, or
   * `failed` when it threw */
  acknowledgeCommands?: boolean;
  /** full-jitter exponential backoff, seconds (default base 0.5, cap 30) */
  backoff?: { base?: number; cap?: number };
  /** sockets refused in a row, while the node's /healthz answers, that end `run()` (3) */
  refusals?: number;
  /** ms on the event stream between two tries of a WebSocket (300000) */
  websocketRetry?: number;
  /** where the client logs (default `console`) */
  log?: Pick<Console, "info" | "warn" | "error">;
}

/** The hub refused something for good: retrying the same thing cannot succeed. */
export class Refused extends Error {}

/** The handshake was refused for good: `status` 401 or 403 with the hub's `code` and
 * `reason`, 404 when there is no socket at that URL, or 0 when the browser kept blocking
 * a socket the hub would accept. */
export class HubRefused extends Refused {
  readonly url: string;
  readonly status: number;
  readonly code: string | null;
  /** the hub's own words */
  readonly reason: string;
}

/** A room's subscribe was refused for good (`forbidden`, `bad_request`, `too_large`). */
export class RoomRefused extends Refused {
  readonly room: string;
  readonly code: string;
  /** the hub's own words */
  readonly reason: string;
}

/** Not connected, or the connection ended before the answer came. */
export class Disconnected extends Error {}

/** The socket URL of the node that served `base` (default: this module). */
export function socketUrl(base?: string | URL): string;

export interface HubClientEventMap {
  /** each welcome, before the rooms are resumed */
  welcome: CustomEvent<Welcome>;
  /** every room is resumed on a new connection */
  connected: CustomEvent<Welcome>;
  /** a connection ended; the next attempt comes after `delay` seconds */
  disconnected: CustomEvent<{ reason: string; delay: number }>;
}

export class HubClient extends EventTarget {
  constructor(urls: string | readonly string[], token: TokenSource, options?: HubClientOptions);

  /** the last welcome, or null before the first */
  welcome: Welcome | null;
  /** true from the moment every room is resumed until the connection ends */
  readonly connected: boolean;
  /** what carries the connection: a WebSocket, or the event stream when a proxy refuses
   * WebSockets and plain HTTP gets through */
  readonly transport: "websocket" | "stream";
  /** the rooms the client keeps, a device's own included */
  readonly rooms: string[];
  /** The hub's clock as the client tells it from its own (by the welcome's and pongs'
   * `time`), ms since the epoch: the moment events with `apply_at` are handed over. */
  hubTime(): number;

  /** Stay connected until `stop()`. Rejects with `HubRefused`, or `RoomRefused` when a
   * room is refused and no `onError` was given. */
  run(): Promise<void>;
  /** `run()` in the background; a refusal that ends it goes to `onError`. */
  start(): this;
  /** Close and stop reconnecting, dropping the events held for their `apply_at`; resolves
   * once `run()` has ended. */
  stop(): Promise<void>;
  /** Resolves with the welcome once connected (at once if it is). */
  whenConnected(): Promise<Welcome>;
  /** Join a room and keep it across reconnects. Do not await it inside a handler. */
  subscribe(room: string): Promise<SubscribeAck>;
  unsubscribe(room: string): Promise<Answer>;
  publish(room: string, event: string, data: Record<string, unknown>): Promise<Answer>;
  /** Send a delivery receipt without waiting; throws `Disconnected` when not connected. */
  receipt(
    event: Pick<HubEvent, "room" | "id">,
    status: "received" | "done" | "failed",
    data?: Record<string, unknown>,
  ): void;

  addEventListener<K extends keyof HubClientEventMap>(
    type: K,
    listener: (event: HubClientEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof HubClientEventMap>(
    type: K,
    listener: (event: HubClientEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}
