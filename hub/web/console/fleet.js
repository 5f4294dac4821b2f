/**
 * The fleet as the console knows it: every device of the tenant, listed by
 * `GET /v1/devices` and kept current by the `status` room's `device.online`,
 * `device.offline` and `device.heartbeat` events. No DOM here: the table reads it once a
 * frame, however many events came in between.
 */

/**
 * One device, in the shape `GET /v1/devices` lists it. `groups` is null while unknown
 * (a device first seen in a `device.online` event, which carries no groups).
 * @typedef {object} Device
 * @property {string} sub
 * @property {boolean} online
 * @property {string | null} loc
 * @property {string[] | null} groups
 * @property {string | null} node
 * @property {number | null} since ms: when it went online or offline
 * @property {number | null} last_seen ms
 * @property {Record<string, any> | null} heartbeat the last heartbeat's data, with its `time`
 * @property {string | null} offline_reason
 */

/**
 * What the table shows: all given conditions hold.
 * @typedef {object} Filter
 * @property {string} text part of the device id, any case
 * @property {string} loc "" for any
 * @property {string} group "" for any
 * @property {"" | "online" | "offline"} state
 */

export class Fleet {
  /** @type {Map<string, Device>} */
  #devices = new Map();
  /** @type {string[] | null} every sub in the hub's order; rebuilt lazily after an addition */
  #order = [];
  #online = 0;
  /** @type {Map<string, number>} devices per location */
  #locations = new Map();
  /** @type {Map<string, number>} devices per group */
  #groups = new Map();
  /**
   * Bumped whenever a device is added or removed, or its state, location or groups change:
   * a filtered view taken before it may be stale. Heartbeats do not bump it.
   */
  revision = 0;
  /** Bumped when a location or a group appears or disappears (the filters' choices). */
  facets = 0;

  get size() {
    return this.#devices.size;
  }

  get online() {
    return this.#online;
  }

  /** @param {string} sub */
  get(sub) {
    return this.#devices.get(sub);
  }

  /** Locations, sorted. */
  locations() {
    return named(this.#locations);
  }

  /** Groups, sorted. */
  groups() {
    return named(this.#groups);
  }

  /** Subs whose groups are not known yet. */
  unknown() {
    const subs = [];
    for (const device of this.#devices.values()) if (device.groups === null) subs.push(device.sub);
    return subs;
  }

  /**
   * The known sub listed just before `sub` in the hub's order, if any: a page of
   * `GET /v1/devices?after=` it starts at `sub`.
   * @param {string} sub
   */
  before(sub) {
    const order = this.#sorted();
    let low = 0;
    let high = order.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (order[middle] < sub) low = middle + 1;
      else high = middle;
    }
    return low > 0 ? order[low - 1] : null;
  }

  /**
   * Take in a device as the hub listed it. The listing may have been read before a live
   * event that is already applied: whatever is newer wins, field by field.
   * @param {Device} listed
   */
  merge(listed) {
    const known = this.#devices.get(listed.sub);
    if (known === undefined) {
      this.#add({ ...listed, groups: Array.isArray(listed.groups) ? listed.groups : [] });
      return;
    }
    this.#unindex(known);
    if ((listed.since ?? 0) >= (known.since ?? 0)) {
      known.online = listed.online;
      known.node = listed.node;
      known.since = listed.since;
      known.offline_reason = listed.offline_reason;
      known.loc = listed.loc;
      known.groups = listed.groups;
    } else if (known.groups === null) {
      known.groups = listed.groups;
    }
    if ((listed.heartbeat?.time ?? 0) >= (known.heartbeat?.time ?? 0)) known.heartbeat = listed.heartbeat;
    known.last_seen = Math.max(known.last_seen ?? 0, listed.last_seen ?? 0) || null;
    this.#index(known);
  }

  /**
   * Forget the devices a complete listing no longer has, unless an event touched them
   * after it began (they went online meanwhile).
   * @param {Set<string>} listed
   * @param {number} began ms: when the listing's first page was asked for
   */
  prune(listed, began) {
    for (const device of [...this.#devices.values()]) {
      if (!listed.has(device.sub) && (device.last_seen ?? 0) < began) {
        this.#unindex(device);
        this.#devices.delete(device.sub);
        this.#order = null;
        this.revision += 1;
      }
    }
  }

  /**
   * Apply one event of the `status` room. Events arrive in the room's order, so each one
   * is the newest word on its device.
   * @param {{event: string, data: any, ts: number}} event
   * @returns {string | null} the device's sub when the event was about a device
   */
  apply(event) {
    const data = event.data;
    const sub = data?.device;
    if (typeof sub !== "string" || typeof event.ts !== "number") return null;
    switch (event.event) {
      case "device.online": {
        const device = this.#ensure(sub);
        this.#unindex(device);
        device.online = true;
        device.node = typeof data.node === "string" ? data.node : null;
        device.loc = typeof data.loc === "string" ? data.loc : null;
        device.since = event.ts;
        device.offline_reason = null;
        device.last_seen = Math.max(device.last_seen ?? 0, event.ts);
        this.#index(device);
        return sub;
      }
      case "device.offline": {
        const device = this.#ensure(sub);
        this.#unindex(device);
        device.online = false;
        device.node = null;
        device.since = event.ts;
        device.offline_reason = typeof data.reason === "string" ? data.reason : null;
        device.last_seen = Math.max(device.last_seen ?? 0, event.ts);
        this.#index(device);
        return sub;
      }
      case "device.heartbeat": {
        const device = this.#devices.get(sub);
        if (device === undefined) return null; // its device.online is listed or on its way
        const { device: _, ...beat } = data;
        device.heartbeat = { ...beat, time: event.ts };
        device.last_seen = Math.max(device.last_seen ?? 0, event.ts);
        return sub;
      }
      default:
        return null;
    }
  }

  /**
   * The devices the filter lets through, in sub order.
   * @param {Filter} filter
   * @returns {Device[]}
   */
  select(filter) {
    const text = filter.text.trim().toLowerCase();
    const state = filter.state === "" ? null : filter.state === "online";
    const shown = [];
    for (const sub of this.#sorted()) {
      const device = /** @type {Device} */ (this.#devices.get(sub));
      if (state !== null && device.online !== state) continue;
      if (filter.loc !== "" && device.loc !== filter.loc) continue;
      if (filter.group !== "" && !(device.groups ?? []).includes(filter.group)) continue;
      if (text !== "" && !sub.toLowerCase().includes(text)) continue;
      shown.push(device);
    }
    return shown;
  }

  /** @param {string} sub */
  #ensure(sub) {
    let device = this.#devices.get(sub);
    if (device === undefined) {
      device = {
        sub,
        online: false,
        loc: null,
        groups: null,
        node: null,
        since: null,
        last_seen: null,
        heartbeat: null,
        offline_reason: null,
      };
      this.#add(device);
    }
    return device;
  }

  /** @param {Device} device */
  #add(device) {
    this.#devices.set(device.sub, device);
    const order = this.#order;
    // Listings come in sub order: appending keeps the order without a sort.
    if (order !== null && (order.length === 0 || order[order.length - 1] < device.sub)) order.push(device.sub);
    else this.#order = null;
    this.#index(device);
  }

  #sorted() {
    if (this.#order === null) this.#order = [...this.#devices.keys()].sort();
    return this.#order;
  }

  /** @param {Device} device */
  #index(device) {
    if (device.online) this.#online += 1;
    if (device.loc !== null) this.#count(this.#locations, device.loc, 1);
    for (const group of device.groups ?? []) this.#count(this.#groups, group, 1);
    this.revision += 1;
  }

  /** @param {Device} device */
  #unindex(device) {
    if (device.online) this.#online -= 1;
    if (device.loc !== null) this.#count(this.#locations, device.loc, -1);
    for (const group of device.groups ?? []) this.#count(this.#groups, group, -1);
  }

  /**
   * @param {Map<string, number>} counts
   * @param {string} name
   * @param {number} by
   */
  #count(counts, name, by) {
    // Names stay at 0 rather than go: a device moving between states is unindexed and
    // indexed again, and must not make the filters' choices change each time.
    if (!counts.has(name)) this.facets += 1;
    counts.set(name, (counts.get(name) ?? 0) + by);
  }
}

/** The names that count at least one device, sorted. @param {Map<string, number>} counts */
function named(counts) {
  return [...counts].filter(([, count]) => count > 0).map(([name]) => name).sort();
}
