// The start of /client.legacy.js, before the bundle: what the bundle calls that Chromium 53
// to 65 lack is added where it is missing, as the standard defines it. The bundle reads
// Object.getOwnPropertyDescriptors (Chromium 54) as it starts, so this cannot wait for the
// bundle's own code.
(function () {
  "use strict";
  function define(target, name, value) {
    if (!(name in target)) {
      Object.defineProperty(target, name, { value: value, writable: true, configurable: true });
    }
  }
  define(Object, "getOwnPropertyDescriptors", function getOwnPropertyDescriptors(object) {
    const descriptors = {};
    for (const key of Reflect.ownKeys(object)) {
      const descriptor = Object.getOwnPropertyDescriptor(object, key);
      if (descriptor !== undefined) descriptors[key] = descriptor;
    }
    return descriptors;
  });
  // Chromium 63
  define(Promise.prototype, "finally", function (callback) {
    if (typeof callback !== "function") return this.then(callback, callback);
    return this.then(
      (value) => Promise.resolve(callback()).then(() => value),
      (reason) =>
        Promise.resolve(callback()).then(() => {
          throw reason;
        })
    );
  });
  // Chromium 66
  define(String.prototype, "trimEnd", function trimEnd() {
    return String(this).replace(/[\s\uFEFF\xA0]+$/, "");
  });
})();
(function () {
"use strict";
var Hub = (() => {
  var __defProp = Object.defineProperty;
  var __defProps = Object.defineProperties;
  var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
  var __getOwnPropDescs = Object.getOwnPropertyDescriptors;
  var __getOwnPropNames = Object.getOwnPropertyNames;
  var __getOwnPropSymbols = Object.getOwnPropertySymbols;
  var __hasOwnProp = Object.prototype.hasOwnProperty;
  var __propIsEnum = Object.prototype.propertyIsEnumerable;
  var __typeError = (msg) => {
    throw TypeError(msg);
  };
  var __pow = Math.pow;
  var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
  var __spreadValues = (a, b) => {
    for (var prop in b || (b = {}))
      if (__hasOwnProp.call(b, prop))
        __defNormalProp(a, prop, b[prop]);
    if (__getOwnPropSymbols)
      for (var prop of __getOwnPropSymbols(b)) {
        if (__propIsEnum.call(b, prop))
          __defNormalProp(a, prop, b[prop]);
      }
    return a;
  };
  var __spreadProps = (a, b) => __defProps(a, __getOwnPropDescs(b));
  var __objRest = (source, exclude) => {
    var target = {};
    for (var prop in source)
      if (__hasOwnProp.call(source, prop) && exclude.indexOf(prop) < 0)
        target[prop] = source[prop];
    if (source != null && __getOwnPropSymbols)
      for (var prop of __getOwnPropSymbols(source)) {
        if (exclude.indexOf(prop) < 0 && __propIsEnum.call(source, prop))
          target[prop] = source[prop];
      }
    return target;
  };
  var __export = (target, all) => {
    for (var name in all)
      __defProp(target, name, { get: all[name], enumerable: true });
  };
  var __copyProps = (to, from, except, desc) => {
    if (from && typeof from === "object" || typeof from === "function") {
      for (let key of __getOwnPropNames(from))
        if (!__hasOwnProp.call(to, key) && key !== except)
          __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
    }
    return to;
  };
  var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);
  var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);
  var __accessCheck = (obj, member, msg) => member.has(obj) || __typeError("Cannot " + msg);
  var __privateGet = (obj, member, getter) => (__accessCheck(obj, member, "read from private field"), getter ? getter.call(obj) : member.get(obj));
  var __privateAdd = (obj, member, value) => member.has(obj) ? __typeError("Cannot add the same private member more than once") : member instanceof WeakSet ? member.add(obj) : member.set(obj, value);
  var __privateSet = (obj, member, value, setter) => (__accessCheck(obj, member, "write to private field"), setter ? setter.call(obj, value) : member.set(obj, value), value);
  var __privateMethod = (obj, member, method) => (__accessCheck(obj, member, "access private method"), method);
  var __privateWrapper = (obj, member, setter, getter) => ({
    set _(value) {
      __privateSet(obj, member, value, setter);
    },
    get _() {
      return __privateGet(obj, member, getter);
    }
  });
  var __async = (__this, __arguments, generator) => {
    return new Promise((resolve, reject) => {
      var fulfilled = (value) => {
        try {
          step(generator.next(value));
        } catch (e) {
          reject(e);
        }
      };
      var rejected = (value) => {
        try {
          step(generator.throw(value));
        } catch (e) {
          reject(e);
        }
      };
      var step = (x) => x.done ? resolve(x.value) : Promise.resolve(x.value).then(fulfilled, rejected);
      step((generator = generator.apply(__this, __arguments)).next());
    });
  };

  // hub/web/client.js
  var client_exports = {};
  __export(client_exports, {
    Disconnected: () => Disconnected,
    HubClient: () => HubClient,
    HubRefused: () => HubRefused,
    Refused: () => Refused,
    RoomRefused: () => RoomRefused,
    socketUrl: () => socketUrl
  });

  // hub/web/legacy/shims.js
  var scriptUrl = document.currentScript ? document.currentScript.src : location.href;
  var _listeners;
  var Listeners = class {
    constructor() {
      __privateAdd(this, _listeners, /* @__PURE__ */ new Map());
    }
    addEventListener(type, listener, options) {
      var _a;
      if (listener === null || listener === void 0) return;
      const list = (_a = __privateGet(this, _listeners).get(type)) != null ? _a : [];
      if (list.some((entry) => entry.listener === listener)) return;
      const once = typeof options === "object" && options !== null && options.once === true;
      list.push({ listener, once, removed: false });
      __privateGet(this, _listeners).set(type, list);
    }
    removeEventListener(type, listener) {
      var _a;
      const list = (_a = __privateGet(this, _listeners).get(type)) != null ? _a : [];
      const index = list.findIndex((entry) => entry.listener === listener);
      if (index === -1) return;
      list[index].removed = true;
      list.splice(index, 1);
    }
    dispatchEvent(event) {
      var _a;
      Object.defineProperty(event, "target", { value: this, configurable: true });
      Object.defineProperty(event, "currentTarget", { value: this, configurable: true });
      for (const entry of [...(_a = __privateGet(this, _listeners).get(event.type)) != null ? _a : []]) {
        if (entry.removed) continue;
        if (entry.once) this.removeEventListener(event.type, entry.listener);
        try {
          if (typeof entry.listener === "function") entry.listener.call(this, event);
          else entry.listener.handleEvent(event);
        } catch (error) {
          setTimeout(() => {
            throw error;
          });
        }
      }
      return !event.defaultPrevented;
    }
  };
  _listeners = new WeakMap();
  function constructible(type) {
    try {
      new type();
      return true;
    } catch (e) {
      return false;
    }
  }
  var eventTarget = constructible(window.EventTarget) ? window.EventTarget : Listeners;
  var Abort = class {
    constructor() {
      __publicField(this, "signal", { aborted: false, onabort: null });
    }
    abort() {
      if (this.signal.aborted) return;
      this.signal.aborted = true;
      if (this.signal.onabort) this.signal.onabort();
    }
  };
  var abortable = typeof window.AbortController === "function";
  function fetchUntilAborted(input, init = {}) {
    const _a = init, { signal } = _a, rest = __objRest(_a, ["signal"]);
    const fetched = window.fetch(input, rest);
    if (!signal) return fetched;
    return new Promise((resolve, reject) => {
      signal.onabort = () => reject(new DOMException("The fetch was aborted.", "AbortError"));
      fetched.then(resolve, reject);
    });
  }
  var AbortController = abortable ? window.AbortController : Abort;
  var fetch = abortable ? (input, init) => window.fetch(input, init) : fetchUntilAborted;

  // hub/web/client.js
  var WELCOME_TIMEOUT = 1e4;
  var REQUEST_TIMEOUT = 3e4;
  var PROBE_TIMEOUT = 5e3;
  var REFUSALS = /* @__PURE__ */ new Set([401, 403, 404]);
  var MAX_HELD = 1e5;
  var MAX_INBOX = 1e5;
  var MIN_HEARTBEAT_INTERVAL = 100;
  var MAX_TEXT = 300;
  var TRANSIENT_CODES = /* @__PURE__ */ new Set(["rate_limited", "unavailable"]);
  var ID = /^([0-9]{1,20})-([0-9]{1,20})$/;
  var MAX_PART = "18446744073709551615";
  var NORMAL = 1e3;
  var CONNECTING = 0;
  var RESTART = 1012;
  var NO_CLOSE_FRAME = 1006;
  var WEBSOCKET_RETRY = 3e5;
  var MAX_POST_FRAMES = 100;
  var POST_TIMEOUT = 3e4;
  var RESTART_CAP = 5;
  var RESTART_WINDOW = 6e4;
  var MAX_SCHEDULED = 1e3;
  var CLOCK_SAMPLES = 8;
  var CLOCK_WINDOW = 6e5;
  var CLOCK_PINGS = 3;
  var CLOCK_PING_INTERVAL = 6e4;
  var MAX_TIMER = __pow(2, 31) - 1;
  var CONTROLS = (() => {
    try {
      return new RegExp("[\\p{C}]", "gu");
    } catch (e) {
      return /[\0-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\uf8ff\u{f0000}-\u{10ffff}]/gu;
    }
  })();
  var Refused = class extends Error {
    constructor() {
      super(...arguments);
      __publicField(this, "name", "Refused");
    }
  };
  var HubRefused = class extends Refused {
    /**
     * @param {string} url the node's URL, without its query
     * @param {number} status @param {string | null} code @param {string} reason
     */
    constructor(url, status, code, reason) {
      super(status ? `${url} answered ${status} ${reason}` : `${url}: ${reason}`);
      __publicField(this, "name", "HubRefused");
      this.url = url;
      this.status = status;
      this.code = code;
      this.reason = reason;
    }
  };
  var RoomRefused = class extends Refused {
    /** @param {string} room @param {string} code @param {string} message */
    constructor(room, code, message) {
      super(`subscribe ${room}: ${code}: ${message}`);
      __publicField(this, "name", "RoomRefused");
      this.room = room;
      this.code = code;
      this.reason = message;
    }
  };
  var Disconnected = class extends Error {
    constructor() {
      super(...arguments);
      __publicField(this, "name", "Disconnected");
    }
  };
  function socketUrl(base = scriptUrl) {
    const url = new URL("v1/ws", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    return url.href;
  }
  var _urls, _token, _rooms, _options, _log, _backoff, _soon, _restarted, _refusalLimit, _transport, _websocketRetry, _refs, _refusals, _link, _connected, _stopping, _running, _wake, _clock, _schedule, _turn, _HubClient_instances, loop_fn, attempt_fn, tryWebSockets_fn, session_fn, refusal_fn, keep_fn, resume_fn, subscribed_fn, handState_fn, deliver_fn, handOver_fn, acknowledged_fn, tryReceipt_fn, process_fn, request_fn, live_fn, currentToken_fn, refresh_fn, keepTime_fn, beat_fn, call_fn, inTurn_fn, invoke_fn;
  var HubClient = class extends eventTarget {
    /**
     * @param {string | string[]} urls the nodes' `ws://` or `wss://` URLs, tried in turn
     * @param {string | (() => string | Promise<string>)} token a JWT, or a provider of fresh ones
     * @param {HubClientOptions} [options]
     */
    constructor(urls, token, options = {}) {
      var _a, _b, _c, _d, _e, _f, _g, _h;
      super();
      __privateAdd(this, _HubClient_instances);
      /** @type {string[]} */
      __privateAdd(this, _urls);
      /** @type {string | (() => string | Promise<string>)} */
      __privateAdd(this, _token);
      /** @type {Map<string, Room>} */
      __privateAdd(this, _rooms, /* @__PURE__ */ new Map());
      __privateAdd(this, _options);
      __privateAdd(this, _log);
      __privateAdd(this, _backoff);
      __privateAdd(this, _soon);
      // the backoff after a 1012: jittered, and short
      /** When a node last closed a socket with 1012 (`performance.now()`), while every try
       * since ended in 1012 again or in no answer at all. @type {number | null} */
      __privateAdd(this, _restarted, null);
      __privateAdd(this, _refusalLimit);
      /** What carries the connections: "websocket", or "stream" (a proxy refuses WebSockets). */
      __privateAdd(this, _transport, "websocket");
      __privateAdd(this, _websocketRetry);
      __privateAdd(this, _refs, 0);
      __privateAdd(this, _refusals, 0);
      /** @type {Link | null} */
      __privateAdd(this, _link, null);
      __privateAdd(this, _connected, false);
      __privateAdd(this, _stopping, false);
      /** @type {Promise<void> | null} */
      __privateAdd(this, _running, null);
      /** @type {(() => void) | null} */
      __privateAdd(this, _wake, null);
      __privateAdd(this, _clock, new HubClock());
      /** Events that wait for their `apply_at`. */
      __privateAdd(this, _schedule, new Schedule(
        __privateGet(this, _clock),
        (event) => __privateMethod(this, _HubClient_instances, handOver_fn).call(this, event),
        (said) => __privateGet(this, _log).warn(`hub client: ${said}`)
      ));
      /** Settles once the handlers called so far have returned. @type {Promise<unknown>} */
      __privateAdd(this, _turn, Promise.resolve());
      /** The last welcome frame, or null before the first. @type {Record<string, any> | null} */
      __publicField(this, "welcome", null);
      __privateSet(this, _urls, checkedUrls(urls));
      if (typeof token !== "string" && typeof token !== "function") {
        throw new TypeError("token must be a string, or a function that returns one");
      }
      __privateSet(this, _token, token);
      __privateSet(this, _options, options);
      __privateSet(this, _log, (_a = options.log) != null ? _a : console);
      __privateSet(this, _backoff, new Backoff((_c = (_b = options.backoff) == null ? void 0 : _b.base) != null ? _c : 0.5, (_e = (_d = options.backoff) == null ? void 0 : _d.cap) != null ? _e : 30));
      __privateSet(this, _soon, new Backoff(__privateGet(this, _backoff).base, Math.min(__privateGet(this, _backoff).cap, RESTART_CAP)));
      __privateSet(this, _refusalLimit, (_f = options.refusals) != null ? _f : 3);
      __privateSet(this, _websocketRetry, (_g = options.websocketRetry) != null ? _g : WEBSOCKET_RETRY);
      for (const room of (_h = options.rooms) != null ? _h : []) __privateGet(this, _rooms).set(room, newRoom());
    }
    /**
     * What carries the connection: "websocket", or "stream" when WebSockets do not get
     * through (a proxy that refuses upgrades) and the event stream does.
     * @returns {"websocket" | "stream"}
     */
    get transport() {
      return (
        /** @type {"websocket" | "stream"} */
        __privateGet(this, _transport)
      );
    }
    /** True from the moment every room is resumed on a connection until it ends. */
    get connected() {
      return __privateGet(this, _connected);
    }
    /** The rooms the client keeps, its own ones included. @returns {string[]} */
    get rooms() {
      return [...__privateGet(this, _rooms).keys()];
    }
    /**
     * The hub's clock as the client tells it from its own, ms since the epoch: the moment
     * events with `apply_at` are handed over. The local clock before the first welcome.
     * @returns {number}
     */
    hubTime() {
      return __privateGet(this, _clock).now();
    }
    /**
     * Stay connected until `stop()`; every connection resumes where the last one ended.
     * Rejects with `HubRefused` when the node keeps refusing the socket, and with
     * `RoomRefused` when a room is refused and no `onError` was given.
     * @returns {Promise<void>}
     */
    run() {
      if (__privateGet(this, _running) !== null) return Promise.reject(new Error("the client is already running"));
      __privateSet(this, _stopping, false);
      __privateSet(this, _refusals, 0);
      __privateSet(this, _running, __privateMethod(this, _HubClient_instances, loop_fn).call(this).finally(() => {
        __privateSet(this, _running, null);
      }));
      return __privateGet(this, _running);
    }
    /** `run()` in the background; a refusal that ends it goes to `onError`. @returns {this} */
    start() {
      this.run().catch((error) => {
        if (error instanceof Refused && __privateGet(this, _options).onError) {
          void __privateMethod(this, _HubClient_instances, call_fn).call(this, __privateGet(this, _options).onError, error);
        } else {
          __privateGet(this, _log).error("hub client stopped:", error);
        }
      });
      return this;
    }
    /** Close the connection and stop reconnecting; resolves once `run()` has ended. The
     * events held for their `apply_at` are dropped: the application is going away. */
    stop() {
      return __async(this, null, function* () {
        var _a, _b, _c;
        __privateSet(this, _stopping, true);
        (_a = __privateGet(this, _wake)) == null ? void 0 : _a.call(this);
        (_b = __privateGet(this, _link)) == null ? void 0 : _b.end("stopped");
        yield (_c = __privateGet(this, _running)) == null ? void 0 : _c.catch(() => {
        });
        __privateGet(this, _schedule).drop();
      });
    }
    /** Resolves with the welcome once the client is connected (at once if it is); rejects
     * with the refusal that ends `run()` first. */
    whenConnected() {
      if (__privateGet(this, _connected)) return Promise.resolve(this.welcome);
      return new Promise((resolve, reject) => {
        var _a;
        const connected = () => resolve(this.welcome);
        this.addEventListener("connected", connected, { once: true });
        (_a = __privateGet(this, _running)) == null ? void 0 : _a.catch((error) => {
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
    subscribe(room) {
      return __async(this, null, function* () {
        if (!__privateGet(this, _rooms).has(room)) __privateGet(this, _rooms).set(room, newRoom());
        const link = __privateMethod(this, _HubClient_instances, live_fn).call(this);
        try {
          return yield __privateMethod(this, _HubClient_instances, resume_fn).call(this, link, room);
        } catch (error) {
          if (error instanceof Disconnected) link.end(error.message);
          throw error;
        }
      });
    }
    /** Leave `room` and stop resuming it. @param {string} room */
    unsubscribe(room) {
      return __async(this, null, function* () {
        __privateGet(this, _rooms).delete(room);
        __privateGet(this, _schedule).drop(room);
        return __privateMethod(this, _HubClient_instances, request_fn).call(this, __privateMethod(this, _HubClient_instances, live_fn).call(this), { op: "unsubscribe", room });
      });
    }
    /**
     * Publish an event over the socket (the token's `publish` claim must allow the room);
     * resolves with the hub's answer, an `ack` with `id` or an `error`.
     * @param {string} room @param {string} event @param {Record<string, any>} data
     */
    publish(room, event, data) {
      return __async(this, null, function* () {
        return __privateMethod(this, _HubClient_instances, request_fn).call(this, __privateMethod(this, _HubClient_instances, live_fn).call(this), { op: "publish", room, event, data });
      });
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
      __privateMethod(this, _HubClient_instances, live_fn).call(this).send(data === void 0 ? frame : __spreadProps(__spreadValues({}, frame), { data }));
    }
  };
  _urls = new WeakMap();
  _token = new WeakMap();
  _rooms = new WeakMap();
  _options = new WeakMap();
  _log = new WeakMap();
  _backoff = new WeakMap();
  _soon = new WeakMap();
  _restarted = new WeakMap();
  _refusalLimit = new WeakMap();
  _transport = new WeakMap();
  _websocketRetry = new WeakMap();
  _refs = new WeakMap();
  _refusals = new WeakMap();
  _link = new WeakMap();
  _connected = new WeakMap();
  _stopping = new WeakMap();
  _running = new WeakMap();
  _wake = new WeakMap();
  _clock = new WeakMap();
  _schedule = new WeakMap();
  _turn = new WeakMap();
  _HubClient_instances = new WeakSet();
  loop_fn = function() {
    return __async(this, null, function* () {
      for (let attempt = 0; ; attempt++) {
        if (__privateGet(this, _stopping)) return;
        const ended = yield __privateMethod(this, _HubClient_instances, attempt_fn).call(this, __privateGet(this, _urls)[attempt % __privateGet(this, _urls).length]);
        if (__privateGet(this, _stopping)) return;
        const later = __privateGet(this, _backoff).next();
        const restarting = __privateGet(this, _restarted) !== null && performance.now() - __privateGet(this, _restarted) < RESTART_WINDOW;
        const delay = restarting ? __privateGet(this, _soon).next() : later;
        __privateGet(this, _log).warn(`hub client: ${ended}; retrying in ${delay.toFixed(1)} s`);
        this.dispatchEvent(new CustomEvent("disconnected", { detail: { reason: ended, delay } }));
        yield new Promise((resolve) => {
          const timer = setTimeout(resolve, delay * 1e3);
          __privateSet(this, _wake, () => {
            clearTimeout(timer);
            resolve(void 0);
          });
        });
        __privateSet(this, _wake, null);
      }
    });
  };
  attempt_fn = function(url) {
    return __async(this, null, function* () {
      const shown = redact(url);
      let token;
      try {
        token = yield __privateMethod(this, _HubClient_instances, currentToken_fn).call(this);
      } catch (error) {
        return `the token provider failed: ${describe(error)}`;
      }
      if (__privateGet(this, _stopping)) return "stopped";
      const socket = __privateGet(this, _transport) === "stream" ? new StreamSocket(streamUrl(url, token), () => link.token) : new WebSocket(withToken(url, token));
      const link = new Link(socket, (frame) => __privateMethod(this, _HubClient_instances, process_fn).call(this, link, frame), (code) => {
        if (code === RESTART) __privateSet(this, _restarted, performance.now());
        else if (code !== NO_CLOSE_FRAME) __privateSet(this, _restarted, null);
      });
      link.token = token;
      __privateSet(this, _link, link);
      try {
        if (!(yield link.opened)) {
          return __privateGet(this, _stopping) ? "stopped" : yield __privateMethod(this, _HubClient_instances, refusal_fn).call(this, url, shown, token);
        }
        yield __privateMethod(this, _HubClient_instances, session_fn).call(this, link, url);
      } catch (error) {
        if (error instanceof Refused) throw error;
        link.end(describe(error));
      } finally {
        __privateSet(this, _link, null);
        __privateSet(this, _connected, false);
        link.end("stopped");
        yield link.idle();
      }
      return `connection to ${shown} ended: ${link.endedWith}`;
    });
  };
  /**
   * On the event stream, try a WebSocket now and then; once one opens, end the stream:
   * the next connection is a socket, and resumes every room.
   */
  tryWebSockets_fn = function(link, url) {
    const timer = setInterval(() => {
      const socket = new WebSocket(withToken(url, link.token));
      socket.onerror = () => {
      };
      socket.onopen = () => {
        socket.close(NORMAL);
        clearInterval(timer);
        __privateSet(this, _transport, "websocket");
        __privateGet(this, _log).warn("hub client: a WebSocket opens again: leaving the event stream");
        link.end("leaving the event stream for a WebSocket");
      };
    }, __privateGet(this, _websocketRetry));
    void link.closed.then(() => clearInterval(timer));
  };
  session_fn = function(link, url) {
    return __async(this, null, function* () {
      const welcome = yield link.welcomed;
      if (welcome === null) return;
      this.welcome = welcome;
      __privateSet(this, _refusals, 0);
      __privateGet(this, _log).info(`hub client: connected to node ${text(welcome.node)} as ${text(welcome.role)}`);
      this.dispatchEvent(new CustomEvent("welcome", { detail: welcome }));
      for (const room of welcome.rooms) if (!__privateGet(this, _rooms).has(room)) __privateGet(this, _rooms).set(room, newRoom());
      __privateMethod(this, _HubClient_instances, beat_fn).call(this, link, welcome);
      __privateMethod(this, _HubClient_instances, keepTime_fn).call(this, link, welcome);
      if (__privateGet(this, _transport) === "stream") __privateMethod(this, _HubClient_instances, tryWebSockets_fn).call(this, link, url);
      yield Promise.all(this.rooms.map((room) => __privateMethod(this, _HubClient_instances, keep_fn).call(this, link, room)));
      __privateGet(this, _backoff).reset();
      __privateGet(this, _soon).reset();
      __privateSet(this, _restarted, null);
      __privateSet(this, _connected, true);
      this.dispatchEvent(new CustomEvent("connected", { detail: welcome }));
      yield link.closed;
    });
  };
  refusal_fn = function(url, shown, token) {
    return __async(this, null, function* () {
      const answer = yield probe(url, token);
      if (answer === null) return `cannot connect to ${shown}`;
      __privateSet(this, _restarted, null);
      if (REFUSALS.has(answer.status)) {
        throw new HubRefused(shown, answer.status, answer.code, answer.reason);
      }
      if (answer.status !== 200) return `${shown} answered ${answer.status} ${answer.reason}`;
      if (__privateGet(this, _transport) === "websocket") {
        __privateSet(this, _transport, "stream");
        return `${shown} accepts the token, yet no WebSocket opened: trying the event stream`;
      }
      __privateSet(this, _refusals, __privateGet(this, _refusals) + 1);
      const attempts = `${__privateGet(this, _refusals)} of ${__privateGet(this, _refusalLimit)}`;
      if (__privateGet(this, _refusals) >= __privateGet(this, _refusalLimit)) {
        const blocked = `the browser blocked ${__privateGet(this, _refusals)} sockets in a row that the hub would accept (Content-Security-Policy, local network access?)`;
        throw new HubRefused(shown, 0, null, blocked);
      }
      return `${shown} accepts the token, yet the socket failed (${attempts})`;
    });
  };
  keep_fn = function(link, room) {
    return __async(this, null, function* () {
      if (!__privateGet(this, _rooms).has(room)) return;
      try {
        yield __privateMethod(this, _HubClient_instances, resume_fn).call(this, link, room);
      } catch (error) {
        if (!(error instanceof RoomRefused) || !__privateGet(this, _options).onError) throw error;
        yield __privateMethod(this, _HubClient_instances, call_fn).call(this, __privateGet(this, _options).onError, error);
      }
    });
  };
  resume_fn = function(link, name) {
    return __async(this, null, function* () {
      const room = (
        /** @type {Room} */
        __privateGet(this, _rooms).get(name)
      );
      const frame = { op: "subscribe", room: name };
      if (room.last !== null) {
        frame.since = formatId(room.last);
        if (room.epoch !== null) frame.epoch = room.epoch;
      }
      const held = room.pending = [];
      try {
        return yield __privateMethod(this, _HubClient_instances, request_fn).call(this, link, frame, (ack) => __privateMethod(this, _HubClient_instances, subscribed_fn).call(this, name, room, frame, ack));
      } finally {
        if (room.pending === held) room.pending = null;
      }
    });
  };
  subscribed_fn = function(name, room, frame, ack) {
    return __async(this, null, function* () {
      var _a, _b;
      const held = (_a = room.pending) != null ? _a : [];
      room.pending = null;
      if (ack.type === "error") {
        const code = text(ack.code);
        const message = text(ack.message);
        const said = `subscribe ${name}: ${code}: ${message}`;
        if (TRANSIENT_CODES.has(code)) throw new Disconnected(said);
        if (__privateGet(this, _rooms).get(name) === room) __privateGet(this, _rooms).delete(name);
        throw new RoomRefused(name, code, message);
      }
      const last = typeof ack.last === "string" ? parseId(ack.last) : null;
      const malformed = ack.type !== "ack" || typeof ack.epoch !== "string";
      if (malformed || ack.last != null && last === null) {
        throw new Disconnected(`subscribe ${name}: not an ack`);
      }
      const resumed = "since" in frame;
      const recovered = resumed && ack.recovered === true;
      if (resumed && !recovered && __privateGet(this, _options).onLost) yield __privateMethod(this, _HubClient_instances, call_fn).call(this, __privateGet(this, _options).onLost, name);
      if (room.epoch !== null && room.epoch !== ack.epoch) room.last = null;
      room.epoch = ack.epoch;
      room.handed = yield __privateMethod(this, _HubClient_instances, handState_fn).call(this, name, ack, recovered);
      held.sort((a, b) => compareIds(parseId(a.id), parseId(b.id)));
      for (const event of held) yield __privateMethod(this, _HubClient_instances, deliver_fn).call(this, room, event);
      if (last !== null && (room.last === null || compareIds(last, room.last) > 0)) room.last = last;
      (_b = room.last) != null ? _b : room.last = ["0", "0"];
      return ack;
    });
  };
  handState_fn = function(name, ack, recovered) {
    return __async(this, null, function* () {
      const events = Array.isArray(ack.state) ? ack.state.filter(isObject) : [];
      const { onState, onEvent } = __privateGet(this, _options);
      if (onState) {
        yield __privateMethod(this, _HubClient_instances, call_fn).call(this, onState, name, events);
      } else if (onEvent && !recovered) {
        for (const event of events) yield __privateGet(this, _schedule).hand(__spreadProps(__spreadValues({}, event), { state: true }));
      } else {
        return /* @__PURE__ */ new Set();
      }
      return new Set(events.map((event) => event.id).filter((id) => parseId(id) !== null));
    });
  };
  deliver_fn = function(room, event) {
    return __async(this, null, function* () {
      const id = parseId(event.id);
      if (id !== null) {
        if (room.last !== null && compareIds(id, room.last) <= 0) return;
        room.last = id;
        if (room.handed.has(event.id)) return;
      }
      if (!__privateGet(this, _options).onEvent) return;
      if (__privateMethod(this, _HubClient_instances, acknowledged_fn).call(this, event)) __privateMethod(this, _HubClient_instances, tryReceipt_fn).call(this, event, "received");
      yield __privateGet(this, _schedule).hand(event);
    });
  };
  /** Run `onEvent`, on arrival or at `apply_at`, in turn with the other handlers; then a
   * command's `done` or `failed`. */
  handOver_fn = function(event) {
    return __privateMethod(this, _HubClient_instances, inTurn_fn).call(this, () => __async(this, null, function* () {
      const { onEvent } = __privateGet(this, _options);
      if (!onEvent) return;
      const ran = yield __privateMethod(this, _HubClient_instances, invoke_fn).call(this, onEvent, event);
      if (__privateMethod(this, _HubClient_instances, acknowledged_fn).call(this, event)) __privateMethod(this, _HubClient_instances, tryReceipt_fn).call(this, event, ran ? "done" : "failed");
    }));
  };
  /** Whether `event` gets receipts: a command with an id, not a room's state. */
  acknowledged_fn = function(event) {
    return __privateGet(this, _options).acknowledgeCommands === true && event.event === "command" && parseId(event.id) !== null && event.state !== true;
  };
  tryReceipt_fn = function(event, status) {
    try {
      this.receipt(event, status);
    } catch (error) {
      __privateGet(this, _log).warn(`hub client: no ${status} receipt for ${text(event.id)}: ${describe(error)}`);
    }
  };
  process_fn = function(link, frame) {
    return __async(this, null, function* () {
      if (frame.type === "event") {
        const room = typeof frame.room === "string" ? __privateGet(this, _rooms).get(frame.room) : void 0;
        if (room === void 0) return;
        if (room.pending === null) return __privateMethod(this, _HubClient_instances, deliver_fn).call(this, room, frame);
        if (room.pending.length >= MAX_HELD) {
          return link.end(`more than ${MAX_HELD} events of ${text(frame.room)} before its ack`);
        }
        room.pending.push(frame);
      } else if (link.answers(frame)) {
        yield link.settle(frame);
      } else if (frame.type === "expiring") {
        void __privateMethod(this, _HubClient_instances, refresh_fn).call(this, link, frame.exp);
      } else if (frame.type === "error" && frame.ref == null) {
        const said = `${text(frame.code)}: ${text(frame.message)}`;
        __privateGet(this, _log).warn(`hub client: the hub refused a heartbeat or a receipt: ${said}`);
      }
    });
  };
  /**
   * Send a request and wait for its answer; `answer` turns it into the result, in the
   * answer's place among the frames (only subscribes need that).
   */
  request_fn = function(link, frame, answer = void 0) {
    var _a;
    const ref = ++__privateWrapper(this, _refs)._;
    const reply = link.expect(ref, `${frame.op} ${(_a = frame.room) != null ? _a : ""}`.trim(), answer);
    link.send(__spreadProps(__spreadValues({}, frame), { ref }), ref);
    return reply;
  };
  /** The live connection, or `Disconnected`. */
  live_fn = function() {
    const link = __privateGet(this, _link);
    if (link === null || link.welcome === null || link.endedWith !== null) {
      throw new Disconnected("not connected");
    }
    return link;
  };
  currentToken_fn = function() {
    return __async(this, null, function* () {
      const token = typeof __privateGet(this, _token) === "function" ? yield __privateGet(this, _token).call(this) : __privateGet(this, _token);
      if (typeof token !== "string" || token === "") throw new TypeError("no token (not a string)");
      return token;
    });
  };
  refresh_fn = function(link, exp) {
    return __async(this, null, function* () {
      if (typeof __privateGet(this, _token) !== "function") {
        __privateGet(this, _log).warn(`hub client: the token expires at ${text(exp)}, and no provider was given`);
        return;
      }
      try {
        const token = yield __privateMethod(this, _HubClient_instances, currentToken_fn).call(this);
        if (token === link.token) {
          __privateGet(this, _log).warn(`hub client: the provider gave the same token, expiring at ${text(exp)}`);
          return;
        }
        const answer = yield __privateMethod(this, _HubClient_instances, request_fn).call(this, link, { op: "refresh", token });
        if (answer.type === "ack") {
          link.token = token;
        } else {
          const said = `${text(answer.code)}: ${text(answer.message)}`;
          __privateGet(this, _log).warn(`hub client: token refresh refused: ${said}`);
        }
      } catch (error) {
        if (!(error instanceof Disconnected)) {
          __privateGet(this, _log).warn(`hub client: token refresh failed: ${describe(error)}`);
        }
      }
    });
  };
  /**
   * The welcome's clock sample; then, while events wait for their `apply_at`, rounds of
   * pings over this connection: one as soon as an event is held, then one every
   * CLOCK_PING_INTERVAL, each moving the wake-up to the new estimate.
   */
  keepTime_fn = function(link, welcome) {
    __privateGet(this, _clock).welcomed(welcome);
    let pinged = false;
    const round = () => __async(this, null, function* () {
      if (__privateGet(this, _schedule).size === 0 || link.endedWith !== null) return;
      pinged = true;
      try {
        for (let n = 0; n < CLOCK_PINGS; n++) {
          const sent = Date.now();
          const pong = yield __privateMethod(this, _HubClient_instances, request_fn).call(this, link, { op: "ping" });
          if (pong.type === "pong") __privateGet(this, _clock).answered(pong.time, sent, Date.now());
        }
      } catch (e) {
        return;
      }
      __privateGet(this, _schedule).arm();
    });
    __privateGet(this, _schedule).onHold = () => {
      if (!pinged) void round();
    };
    link.every(CLOCK_PING_INTERVAL, () => void round());
    void round();
  };
  /** A device's heartbeats, on the welcome's interval, until the connection ends. */
  beat_fn = function(link, welcome) {
    if (welcome.role !== "device") return;
    const beat = () => __async(this, null, function* () {
      let data;
      try {
        data = __privateGet(this, _options).heartbeat ? yield __privateGet(this, _options).heartbeat() : { status: "ok" };
      } catch (error) {
        __privateGet(this, _log).error("hub client: heartbeat callback failed, no heartbeat this time:", error);
        return;
      }
      link.send({ op: "heartbeat", data });
    });
    void beat();
    link.every(Math.max(MIN_HEARTBEAT_INTERVAL, welcome.heartbeat.interval * 1e3), beat);
  };
  /** Run a user handler in its turn; its failure is logged (and returned as false), never
   * the end of the connection. */
  call_fn = function(handler, ...args) {
    return __privateMethod(this, _HubClient_instances, inTurn_fn).call(this, () => __privateMethod(this, _HubClient_instances, invoke_fn).call(this, handler, ...args));
  };
  /**
   * Run `work` once the handlers called before it have returned: never two at a time, even
   * when a held event comes due while a frame is handled. `work` must not throw.
   * @template T @param {() => Promise<T>} work @returns {Promise<T>}
   */
  inTurn_fn = function(work) {
    const turn = __privateGet(this, _turn).then(work);
    __privateSet(this, _turn, turn);
    return turn;
  };
  invoke_fn = function(handler, ...args) {
    return __async(this, null, function* () {
      try {
        yield handler(...args);
        return true;
      } catch (error) {
        __privateGet(this, _log).error("hub client: handler failed:", error);
        return false;
      }
    });
  };
  var _waiting, _inbox, _head, _draining, _timers, _intervals, _outbox, _pace, _resolve, _Link_instances, flush_fn, arm_fn, receive_fn, drain_fn;
  var Link = class {
    /**
     * @param {WebSocket | StreamSocket} socket
     * @param {(frame: Record<string, any>) => Promise<void> | void} handle
     * @param {(code: number) => void} closed told the close code, if the socket closes
     */
    constructor(socket, handle, closed) {
      __privateAdd(this, _Link_instances);
      /** @type {Record<string, any> | null} */
      __publicField(this, "welcome", null);
      /** @type {string | null} */
      __publicField(this, "endedWith", null);
      /** The token the hub holds for this socket. */
      __publicField(this, "token", "");
      /** @type {Map<number, Waiter>} */
      __privateAdd(this, _waiting, /* @__PURE__ */ new Map());
      /** @type {Record<string, any>[]} */
      __privateAdd(this, _inbox, []);
      __privateAdd(this, _head, 0);
      /** @type {Promise<void> | null} */
      __privateAdd(this, _draining, null);
      __privateAdd(this, _timers, { welcome: 0, pace: 0 });
      /** @type {ReturnType<typeof setInterval>[]} */
      __privateAdd(this, _intervals, []);
      /** @type {{text: string, ref: number | null}[]} frames waiting for their turn at the
       * welcome's pace, each with the request it makes */
      __privateAdd(this, _outbox, []);
      /** @type {Pace | null} */
      __privateAdd(this, _pace, null);
      __privateAdd(this, _resolve);
      const settle = {};
      this.opened = new Promise((resolve) => settle.opened = resolve);
      this.welcomed = new Promise((resolve) => settle.welcomed = resolve);
      this.closed = new Promise((resolve) => settle.closed = resolve);
      __privateSet(this, _resolve, settle);
      this.handle = handle;
      this.ws = socket;
      this.ws.onopen = () => {
        settle.opened(true);
        __privateGet(this, _timers).welcome = setTimeout(() => this.end("no welcome within 10 s"), WELCOME_TIMEOUT);
      };
      this.ws.onmessage = (message) => __privateMethod(this, _Link_instances, receive_fn).call(this, message.data);
      this.ws.onclose = (event) => {
        closed(event.code);
        this.end(`closed ${event.code} ${text(event.reason)}`.trimEnd());
      };
      this.ws.onerror = () => {
      };
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
      __privateGet(this, _outbox).push({ text: JSON.stringify(frame), ref });
      if (__privateGet(this, _timers).pace === 0) __privateMethod(this, _Link_instances, flush_fn).call(this);
    }
    /** Call `callback` every `ms` until the connection ends. */
    every(ms, callback) {
      if (this.endedWith === null) __privateGet(this, _intervals).push(setInterval(callback, ms));
    }
    /**
     * A promise of the answer to request `ref`, settled through `answer` when given; it
     * waits REQUEST_TIMEOUT from when `send` sends the request.
     */
    expect(ref, what, answer) {
      if (this.endedWith !== null) return Promise.reject(new Disconnected("not connected"));
      return new Promise((resolve, reject) => {
        const ordered = answer !== void 0;
        __privateGet(this, _waiting).set(ref, { ordered, what, answer, resolve, reject, timer: void 0 });
      });
    }
    /** Whether `frame` answers a request that waits for it in order. */
    answers(frame) {
      var _a;
      return ((_a = __privateGet(this, _waiting).get(frame.ref)) == null ? void 0 : _a.ordered) === true;
    }
    settle(frame) {
      return __async(this, null, function* () {
        const waiter = __privateGet(this, _waiting).get(frame.ref);
        if (waiter === void 0) return;
        __privateGet(this, _waiting).delete(frame.ref);
        clearTimeout(waiter.timer);
        try {
          waiter.resolve(waiter.answer ? yield waiter.answer(frame) : frame);
        } catch (error) {
          waiter.reject(error);
        }
      });
    }
    /** End the connection now (later events are ignored), saying why; the first reason wins. */
    end(reason) {
      if (this.endedWith !== null) return;
      this.endedWith = reason;
      clearTimeout(__privateGet(this, _timers).welcome);
      for (const interval of __privateGet(this, _intervals)) clearInterval(interval);
      clearTimeout(__privateGet(this, _timers).pace);
      __privateSet(this, _outbox, []);
      for (const waiter of __privateGet(this, _waiting).values()) {
        clearTimeout(waiter.timer);
        waiter.reject(new Disconnected("connection lost"));
      }
      __privateGet(this, _waiting).clear();
      __privateGet(this, _resolve).opened(false);
      __privateGet(this, _resolve).welcomed(null);
      __privateGet(this, _resolve).closed(reason);
      if (this.ws.readyState === CONNECTING) {
        this.ws.onopen = () => this.ws.close(NORMAL);
      } else {
        this.ws.close(NORMAL);
      }
    }
    /** Resolves once no frame of this connection is being handled. */
    idle() {
      var _a;
      return (_a = __privateGet(this, _draining)) != null ? _a : Promise.resolve();
    }
  };
  _waiting = new WeakMap();
  _inbox = new WeakMap();
  _head = new WeakMap();
  _draining = new WeakMap();
  _timers = new WeakMap();
  _intervals = new WeakMap();
  _outbox = new WeakMap();
  _pace = new WeakMap();
  _resolve = new WeakMap();
  _Link_instances = new WeakSet();
  flush_fn = function() {
    __privateGet(this, _timers).pace = 0;
    while (__privateGet(this, _outbox).length > 0 && this.endedWith === null) {
      const wait = __privateGet(this, _pace) === null ? 0 : __privateGet(this, _pace).take();
      if (wait > 0) {
        __privateGet(this, _timers).pace = setTimeout(() => __privateMethod(this, _Link_instances, flush_fn).call(this), wait * 1e3);
        return;
      }
      const { text: text2, ref } = (
        /** @type {{text: string, ref: number | null}} */
        __privateGet(this, _outbox).shift()
      );
      this.ws.send(text2);
      if (ref !== null) __privateMethod(this, _Link_instances, arm_fn).call(this, ref);
    }
  };
  /** The request `ref` is sent: from now on it waits REQUEST_TIMEOUT for its answer. */
  arm_fn = function(ref) {
    const waiter = __privateGet(this, _waiting).get(ref);
    if (waiter === void 0) return;
    waiter.timer = setTimeout(() => {
      __privateGet(this, _waiting).delete(ref);
      const said = `no answer to ${waiter.what} within ${REQUEST_TIMEOUT / 1e3} s`;
      waiter.reject(new Disconnected(said));
    }, REQUEST_TIMEOUT);
  };
  receive_fn = function(data) {
    var _a;
    if (this.endedWith !== null) return;
    const frame = parseFrame(data);
    if (typeof frame === "string") return this.end(frame);
    if (this.welcome === null) {
      const problem = welcomeProblem(frame);
      if (problem !== null) return this.end(problem);
      clearTimeout(__privateGet(this, _timers).welcome);
      this.welcome = frame;
      __privateSet(this, _pace, Pace.of(frame.limits));
      return __privateGet(this, _resolve).welcomed(frame);
    }
    const waiter = typeof frame.ref === "number" ? __privateGet(this, _waiting).get(frame.ref) : void 0;
    if (waiter !== void 0 && !waiter.ordered) return void this.settle(frame);
    if (__privateGet(this, _inbox).length - __privateGet(this, _head) >= MAX_INBOX) {
      return this.end(`more than ${MAX_INBOX} frames waiting for the handlers`);
    }
    __privateGet(this, _inbox).push(frame);
    (_a = __privateGet(this, _draining)) != null ? _a : __privateSet(this, _draining, __privateMethod(this, _Link_instances, drain_fn).call(this));
  };
  drain_fn = function() {
    return __async(this, null, function* () {
      try {
        while (__privateGet(this, _head) < __privateGet(this, _inbox).length && this.endedWith === null) {
          const frame = __privateGet(this, _inbox)[__privateGet(this, _head)];
          __privateGet(this, _inbox)[__privateWrapper(this, _head)._++] = void 0;
          if (__privateGet(this, _head) >= 1024 && __privateGet(this, _head) * 2 >= __privateGet(this, _inbox).length) {
            __privateSet(this, _inbox, __privateGet(this, _inbox).slice(__privateGet(this, _head)));
            __privateSet(this, _head, 0);
          }
          try {
            yield this.handle(frame);
          } catch (error) {
            this.end(describe(error));
          }
        }
      } finally {
        __privateSet(this, _inbox, []);
        __privateSet(this, _head, 0);
        __privateSet(this, _draining, null);
      }
    });
  };
  var _source, _url, _post, _outbox2, _posting, _token2, _StreamSocket_instances, flush_fn2, deliver_fn2, closed_fn;
  var StreamSocket = class {
    /** @param {string} url the node's `/v1/stream?token=` @param {() => string} token */
    constructor(url, token) {
      __privateAdd(this, _StreamSocket_instances);
      __publicField(this, "readyState", CONNECTING);
      /** @type {(() => void) | null} */
      __publicField(this, "onopen", null);
      /** @type {((message: {data: string}) => void) | null} */
      __publicField(this, "onmessage", null);
      /** @type {((event: {code: number, reason: string}) => void) | null} */
      __publicField(this, "onclose", null);
      /** @type {(() => void) | null} */
      __publicField(this, "onerror", null);
      __privateAdd(this, _source);
      __privateAdd(this, _url);
      /** @type {string | null} where the frames go, from the welcome */
      __privateAdd(this, _post, null);
      /** @type {string[]} */
      __privateAdd(this, _outbox2, []);
      __privateAdd(this, _posting, false);
      __privateAdd(this, _token2);
      __privateSet(this, _url, url);
      __privateSet(this, _token2, token);
      __privateSet(this, _source, new EventSource(url));
      __privateGet(this, _source).onopen = () => {
        this.readyState = 1;
        if (this.onopen) this.onopen();
      };
      __privateGet(this, _source).onmessage = (message) => {
        if (__privateGet(this, _post) === null) {
          try {
            __privateSet(this, _post, new URL(JSON.parse(message.data).stream.post, __privateGet(this, _url)).href);
          } catch (e) {
            return __privateMethod(this, _StreamSocket_instances, closed_fn).call(this, NO_CLOSE_FRAME, "the stream's welcome says nowhere to send");
          }
        }
        if (this.onmessage) this.onmessage({ data: message.data });
      };
      __privateGet(this, _source).addEventListener("close", (message) => {
        let said = {};
        try {
          said = JSON.parse(
            /** @type {MessageEvent} */
            message.data
          );
        } catch (e) {
        }
        const code = typeof said.code === "number" ? said.code : NO_CLOSE_FRAME;
        __privateMethod(this, _StreamSocket_instances, closed_fn).call(this, code, typeof said.reason === "string" ? said.reason : "");
      });
      __privateGet(this, _source).onerror = () => __privateMethod(this, _StreamSocket_instances, closed_fn).call(this, NO_CLOSE_FRAME, "");
    }
    /** @param {string} frame */
    send(frame) {
      if (this.readyState !== 1) return;
      __privateGet(this, _outbox2).push(frame);
      if (!__privateGet(this, _posting)) void __privateMethod(this, _StreamSocket_instances, flush_fn2).call(this);
    }
    close(code = NORMAL) {
      __privateMethod(this, _StreamSocket_instances, closed_fn).call(this, code, "");
    }
  };
  _source = new WeakMap();
  _url = new WeakMap();
  _post = new WeakMap();
  _outbox2 = new WeakMap();
  _posting = new WeakMap();
  _token2 = new WeakMap();
  _StreamSocket_instances = new WeakSet();
  flush_fn2 = function() {
    return __async(this, null, function* () {
      __privateSet(this, _posting, true);
      try {
        while (__privateGet(this, _outbox2).length > 0 && this.readyState === 1) {
          const batch = __privateGet(this, _outbox2).splice(0, MAX_POST_FRAMES);
          if (!(yield __privateMethod(this, _StreamSocket_instances, deliver_fn2).call(this, `[${batch.join(",")}]`))) {
            __privateMethod(this, _StreamSocket_instances, closed_fn).call(this, NO_CLOSE_FRAME, "frames not taken");
          }
        }
      } finally {
        __privateSet(this, _posting, false);
      }
    });
  };
  deliver_fn2 = function(body) {
    return __async(this, null, function* () {
      const deadline = Date.now() + POST_TIMEOUT;
      let wait = 100;
      for (; ; ) {
        let status = 0;
        try {
          const target = new URL(
            /** @type {string} */
            __privateGet(this, _post)
          );
          target.searchParams.set("token", __privateGet(this, _token2).call(this));
          const answer = yield fetch(target.href, {
            method: "POST",
            body,
            headers: { "Content-Type": "text/plain" },
            cache: "no-store",
            credentials: "omit"
          });
          status = answer.status;
        } catch (e) {
        }
        if (status === 202) return true;
        if (status !== 0 && status !== 429 && status < 500) return false;
        if (this.readyState !== 1 || Date.now() + wait > deadline) return false;
        yield new Promise((resolve) => setTimeout(resolve, wait));
        wait = Math.min(wait * 2, 2e3);
      }
    });
  };
  closed_fn = function(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    __privateGet(this, _source).close();
    __privateSet(this, _outbox2, []);
    if (this.onclose) this.onclose({ code, reason });
  };
  var Pace = class _Pace {
    /** @param {number} rate @param {number} burst */
    constructor(rate, burst) {
      this.rate = rate;
      this.burst = burst;
      this.tokens = burst;
      this.stamp = performance.now();
    }
    /** None when the hub sets no rate (or, older, does not say). */
    static of(limits) {
      return isObject(limits) && limits.rate > 0 ? new _Pace(limits.rate, Math.max(1, Math.floor(limits.burst / 2))) : null;
    }
    /** Take a token: 0 when granted, else the seconds until one is there. */
    take() {
      const now = performance.now();
      this.tokens = Math.min(this.burst, this.tokens + (now - this.stamp) / 1e3 * this.rate);
      this.stamp = now;
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return 0;
      }
      return (1 - this.tokens) / this.rate;
    }
  };
  var Backoff = class {
    constructor(base, cap) {
      __publicField(this, "attempt", 0);
      this.base = base;
      this.cap = cap;
    }
    next() {
      const ceiling = Math.min(this.cap, this.base * __pow(2, this.attempt));
      this.attempt = Math.min(this.attempt + 1, 32);
      return Math.random() * ceiling;
    }
    reset() {
      this.attempt = 0;
    }
  };
  var _samples, _HubClock_instances, add_fn;
  var HubClock = class {
    constructor() {
      __privateAdd(this, _HubClock_instances);
      /** @type {{offset: number, roundTrip: number, taken: number}[]} */
      __privateAdd(this, _samples, []);
    }
    now() {
      return Date.now() + this.offset;
    }
    /** Ms to add to the local clock to read the hub's. */
    get offset() {
      const samples = __privateGet(this, _samples);
      if (samples.length === 0) return 0;
      const now = Date.now();
      const recent = samples.filter((sample) => now - sample.taken <= CLOCK_WINDOW);
      if (recent.length === 0) return samples[samples.length - 1].offset;
      return recent.reduce((best, sample) => sample.roundTrip <= best.roundTrip ? sample : best).offset;
    }
    /** @param {Record<string, any>} welcome */
    welcomed(welcome) {
      const received = Date.now();
      if (isTime(welcome.time)) __privateMethod(this, _HubClock_instances, add_fn).call(this, welcome.time - received, Infinity, received);
    }
    /** A pong's `time`, for a ping sent and answered at those local times: the hub read its
     * clock somewhere in between, best guessed halfway. */
    answered(time, sent, received) {
      if (isTime(time) && received >= sent) {
        __privateMethod(this, _HubClock_instances, add_fn).call(this, time - (sent + received) / 2, received - sent, received);
      }
    }
  };
  _samples = new WeakMap();
  _HubClock_instances = new WeakSet();
  add_fn = function(offset, roundTrip, taken) {
    __privateGet(this, _samples).push({ offset, roundTrip, taken });
    if (__privateGet(this, _samples).length > CLOCK_SAMPLES) __privateGet(this, _samples).shift();
  };
  var _held, _timer, _handing, _Schedule_instances, handDue_fn;
  var Schedule = class {
    /**
     * @param {HubClock} clock
     * @param {(event: Record<string, any>) => Promise<void>} deliver must not throw
     * @param {(said: string) => void} warn
     */
    constructor(clock, deliver, warn) {
      __privateAdd(this, _Schedule_instances);
      /** Sorted by `at`, then arrival. @type {{at: number, event: Record<string, any>}[]} */
      __privateAdd(this, _held, []);
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      __privateAdd(this, _timer);
      __privateAdd(this, _handing, false);
      /** Told each time an event is held: the connection pings for the hub's clock. */
      __publicField(this, "onHold", () => {
      });
      this.clock = clock;
      this.deliver = deliver;
      this.warn = warn;
    }
    get size() {
      return __privateGet(this, _held).length;
    }
    /** Hand `event` over now, or hold it until its `apply_at`. @param {Record<string, any>} event */
    hand(event) {
      return __async(this, null, function* () {
        const at = isTime(event.apply_at) ? event.apply_at : null;
        if (at === null || at <= this.clock.now()) return this.deliver(event);
        let place = __privateGet(this, _held).length;
        while (place > 0 && __privateGet(this, _held)[place - 1].at > at) place--;
        __privateGet(this, _held).splice(place, 0, { at, event });
        const soonest = __privateGet(this, _held).length > MAX_SCHEDULED ? __privateGet(this, _held).shift() : void 0;
        this.arm();
        this.onHold();
        if (soonest !== void 0) {
          this.warn(`more than ${MAX_SCHEDULED} events wait for their apply_at: one goes early`);
          yield this.deliver(soonest.event);
        }
      });
    }
    /** Forget the held events (of `room` only, when given). @param {string} [room] */
    drop(room) {
      __privateSet(this, _held, room === void 0 ? [] : __privateGet(this, _held).filter(({ event }) => event.room !== room));
      this.arm();
    }
    /** Wake up when the soonest held event is due, by the current estimate. */
    arm() {
      clearTimeout(__privateGet(this, _timer));
      __privateSet(this, _timer, void 0);
      if (__privateGet(this, _held).length === 0) return;
      const delay = Math.min(MAX_TIMER, Math.max(0, __privateGet(this, _held)[0].at - this.clock.now()));
      __privateSet(this, _timer, setTimeout(() => void __privateMethod(this, _Schedule_instances, handDue_fn).call(this), delay));
    }
  };
  _held = new WeakMap();
  _timer = new WeakMap();
  _handing = new WeakMap();
  _Schedule_instances = new WeakSet();
  handDue_fn = function() {
    return __async(this, null, function* () {
      __privateSet(this, _timer, void 0);
      if (__privateGet(this, _handing)) return;
      __privateSet(this, _handing, true);
      try {
        while (__privateGet(this, _held).length > 0 && __privateGet(this, _held)[0].at <= this.clock.now()) {
          const { event } = (
            /** @type {{event: Record<string, any>}} */
            __privateGet(this, _held).shift()
          );
          yield this.deliver(event);
        }
      } finally {
        __privateSet(this, _handing, false);
      }
      this.arm();
    });
  };
  function newRoom() {
    return { last: null, epoch: null, pending: null, handed: /* @__PURE__ */ new Set() };
  }
  function checkedUrls(urls) {
    const list = typeof urls === "string" ? [urls] : Array.from(urls != null ? urls : []);
    if (list.length === 0) throw new TypeError("give at least one URL (ws://host:port/v1/ws)");
    for (const url of list) {
      let protocol = null;
      try {
        protocol = new URL(url).protocol;
      } catch (e) {
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
  function streamUrl(url, token) {
    const parsed = new URL(withToken(url, token));
    parsed.protocol = parsed.protocol === "wss:" ? "https:" : "http:";
    parsed.pathname = "/v1/stream";
    parsed.hash = "";
    return parsed.href;
  }
  function redact(url) {
    try {
      const parsed = new URL(url);
      parsed.search = "";
      parsed.hash = "";
      return parsed.href;
    } catch (e) {
      return "(not a URL)";
    }
  }
  function probe(url, token) {
    return __async(this, null, function* () {
      const asked = new URL(withToken(url, token));
      asked.protocol = asked.protocol === "wss:" ? "https:" : "http:";
      asked.hash = "";
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), PROBE_TIMEOUT);
      try {
        const answer = yield fetch(asked, {
          cache: "no-store",
          credentials: "omit",
          signal: controller.signal
        });
        const body = yield answer.json().catch(() => null);
        const said = body == null ? void 0 : body.error;
        return {
          status: answer.status,
          code: typeof (said == null ? void 0 : said.code) === "string" ? text(said.code) : null,
          reason: typeof (said == null ? void 0 : said.message) === "string" ? text(said.message) : text(answer.statusText)
        };
      } catch (e) {
        return null;
      } finally {
        clearTimeout(timer);
      }
    });
  }
  function parseFrame(data) {
    if (typeof data !== "string") return "the hub sent a binary frame";
    try {
      const frame = JSON.parse(data);
      return isObject(frame) ? frame : "the hub sent a frame that is not a JSON object";
    } catch (e) {
      return "the hub sent a frame that is not JSON";
    }
  }
  function welcomeProblem(frame) {
    var _a, _b;
    if (frame.type !== "welcome") return `expected a welcome, got ${text(frame.type)}`;
    (_a = frame.rooms) != null ? _a : frame.rooms = [];
    if (!Array.isArray(frame.rooms) || !frame.rooms.every((room) => typeof room === "string")) {
      return "malformed welcome: rooms must be a list of names";
    }
    if (typeof frame.role !== "string") return "malformed welcome: no role";
    const interval = (_b = frame.heartbeat) == null ? void 0 : _b.interval;
    if (frame.role === "device" && !(Number.isFinite(interval) && interval > 0)) {
      return "malformed welcome: heartbeat.interval must be a positive number";
    }
    const limits = frame.limits;
    const rate = limits == null ? void 0 : limits.rate;
    const burst = limits == null ? void 0 : limits.burst;
    if (limits !== void 0 && !(isObject(limits) && Number.isFinite(rate) && rate >= 0 && Number.isFinite(burst) && burst > 0)) {
      return "malformed welcome: limits needs a rate of 0 or more and a positive burst";
    }
    return null;
  }
  function isTime(value) {
    return typeof value === "number" && Number.isFinite(value);
  }
  function isObject(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
  }
  function parseId(value) {
    const match = typeof value === "string" ? ID.exec(value) : null;
    if (match === null) return null;
    const pair = (
      /** @type {[string, string]} */
      [integer(match[1]), integer(match[2])]
    );
    return comparePart(pair[0], MAX_PART) > 0 || comparePart(pair[1], MAX_PART) > 0 ? null : pair;
  }
  function integer(digits) {
    return digits.replace(/^0+(?=.)/, "");
  }
  function comparePart(a, b) {
    if (a.length !== b.length) return a.length < b.length ? -1 : 1;
    return a === b ? 0 : a < b ? -1 : 1;
  }
  function formatId(pair) {
    return `${pair[0]}-${pair[1]}`;
  }
  function compareIds(a, b) {
    if (a === null || b === null) return (a === null ? 0 : 1) - (b === null ? 0 : 1);
    return comparePart(a[0], b[0]) || comparePart(a[1], b[1]);
  }
  function text(value) {
    const said = (typeof value === "string" ? value : String(value)).replace(CONTROLS, " ");
    return said.length <= MAX_TEXT ? said : `${said.slice(0, MAX_TEXT - 3)}...`;
  }
  function describe(error) {
    return text(error instanceof Error ? error.message || error.name : error);
  }
  return __toCommonJS(client_exports);
})();
window.Hub = Hub;
})();
