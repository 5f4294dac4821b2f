/**
 * Node and cluster figures from `GET /v1/stats`, read every few seconds while the page is
 * in view. An operator is answered with its tenant's share, which has totals but no rates:
 * messages per second then come from the difference between two readings.
 */

import { ApiError } from "./api.js";
import { clock, figure } from "./format.js";
import { Refresher } from "./refresh.js";

/** Milliseconds between two readings. */
export const INTERVAL = 5000;
/** Milliseconds to the second reading, when the first gave no rates. */
const FIRST_RATE = 1000;
const ROLES = ["device", "dashboard", "operator", "admin"];

/**
 * @typedef {object} Reading
 * @property {number} at ms
 * @property {Record<string, number>} node message totals
 * @property {Record<string, number>} cluster
 */

export class StatsPanel {
  #api;
  #elements;
  /** @type {Reading | null} */
  #last = null;
  /** @type {Refresher | undefined} */
  #refresher;
  #abort = new AbortController();
  #refused;

  /**
   * @param {import("./api.js").Api} api
   * @param {string | null} refusal why this token may not read stats, or null when it may
   * @param {(message: string) => void} refused called when the hub refuses the token
   */
  constructor(api, refusal, refused) {
    this.#api = api;
    this.#refused = refused;
    const byId = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
    this.#elements = {
      message: byId("stats-message"),
      table: byId("stats-table"),
      body: byId("stats-body"),
      node: byId("stats-node"),
      time: byId("stats-time"),
    };
    if (refusal !== null) {
      this.#say(refusal);
      return;
    }
    this.#refresher = new Refresher(
      () => this.#read(),
      (error) => this.#say(`The figures could not be shown: ${error}`),
      this.#abort.signal,
    );
  }

  async #read() {
    try {
      const stats = await this.#api.get("v1/stats", undefined, this.#abort.signal);
      const rated = this.#show(stats);
      // Rates need two readings: the second comes soon, so they show without a long wait.
      this.#refresher?.soon(rated ? INTERVAL : FIRST_RATE);
    } catch (error) {
      if (this.#abort.signal.aborted) return;
      if (!(error instanceof ApiError)) throw error;
      if (error.status === 401) {
        this.#refused(error.message);
      } else if (error.status === 403) {
        this.#say(`This token may not read the node's figures: ${error.message}.`);
      } else {
        this.#say(`The figures could not be read: ${error.describe()}; trying again.`);
        this.#refresher?.soon(INTERVAL);
      }
    }
  }

  /**
   * @param {any} stats
   * @returns {boolean} whether it could show rates
   */
  #show(stats) {
    const node = stats.node ?? {};
    // A node that has just started has not shared its figures yet: a cluster of no nodes.
    const early = stats.cluster != null && nodeCount(stats.cluster) === 0;
    const cluster = early ? null : stats.cluster;
    const now = Date.now();
    const reading = { at: now, node: { ...node.messages }, cluster: { ...cluster?.messages } };
    const rates = (/** @type {any} */ figures, /** @type {"node" | "cluster"} */ which) => {
      if (figures?.messages?.per_second) return figures.messages.per_second;
      const before = this.#last?.[which];
      if (!before || this.#last === null) return null;
      const seconds = (now - this.#last.at) / 1000;
      /** @type {Record<string, number>} */
      const rate = {};
      for (const [name, total] of Object.entries(figures?.messages ?? {})) {
        // A node leaving the cluster lowers its sums: no rate rather than a negative one.
        if (typeof total === "number" && typeof before[name] === "number" && total >= before[name]) {
          rate[name] = (total - before[name]) / seconds;
        }
      }
      return rate;
    };
    const nodeRates = rates(node, "node");
    const clusterRates = cluster ? rates(cluster, "cluster") : null;
    this.#last = reading;
    /** @type {[string, string, string][]} */
    const rows = [];
    const both = (/** @type {string} */ label, /** @type {(f: any) => any} */ pick) => {
      rows.push([label, shownFigure(pick(node)), cluster ? shownFigure(pick(cluster)) : "–"]);
    };
    both("connections", (f) => f.connections?.total);
    for (const role of ROLES) both(`· ${role}s`, (f) => f.connections?.[role]);
    both("rooms", (f) => f.rooms);
    rows.push(["messages in /s", rate(nodeRates, "in"), rate(clusterRates, "in")]);
    rows.push(["messages out /s", rate(nodeRates, "out"), rate(clusterRates, "out")]);
    if (node.messages && "dropped" in node.messages) {
      rows.push(["dropped /s", rate(nodeRates, "dropped"), rate(clusterRates, "dropped")]);
    }
    if (node.capacity) {
      both("utilisation", (f) => (typeof f.capacity?.utilization === "number" ? `${(f.capacity.utilization * 100).toFixed(1)} %` : undefined));
    }
    rows.push([
      "nodes",
      node.draining ? "draining" : "serving",
      cluster ? nodes(cluster) : "–",
    ]);
    this.#elements.node.textContent = `node ${node.node ?? ""}`;
    this.#elements.body.replaceChildren(...rows.map((cells) => {
      const row = document.createElement("tr");
      const head = document.createElement("th");
      head.scope = "row";
      head.textContent = cells[0];
      row.append(head);
      for (const text of cells.slice(1)) row.insertCell().textContent = text;
      return row;
    }));
    this.#elements.table.hidden = false;
    this.#elements.time.textContent = `at ${clock(now)}`;
    if (early) this.#say("The cluster's figures come with the nodes' next share (every 2 s).");
    else if (cluster == null) this.#say(`Cluster figures unavailable: ${stats.cluster_error ?? "no answer from Redis"}.`);
    else this.#say("");
    const clusterRated = cluster == null ? !early : typeof clusterRates?.in === "number";
    return nodeRates !== null && clusterRated;
  }

  /** @param {string} text */
  #say(text) {
    this.#elements.message.textContent = text;
    this.#elements.message.hidden = text === "";
  }

  stop() {
    this.#abort.abort();
    this.#elements.table.hidden = true;
    this.#elements.body.replaceChildren();
    this.#elements.time.textContent = "";
    this.#say("");
  }
}

/** @param {unknown} value */
function shownFigure(value) {
  return typeof value === "string" ? value : figure(/** @type {number} */ (value));
}

/**
 * @param {Record<string, number> | null} rates
 * @param {string} name
 */
function rate(rates, name) {
  return rates && typeof rates[name] === "number" ? figure(rates[name]) : "–";
}

/** @param {any} cluster */
function nodeCount(cluster) {
  return Array.isArray(cluster.nodes) ? cluster.nodes.length : cluster.nodes;
}

/** How many nodes, and how many drain. @param {any} cluster */
function nodes(cluster) {
  const count = nodeCount(cluster);
  const draining = typeof cluster.draining_nodes === "number" && cluster.draining_nodes > 0 ? `, ${cluster.draining_nodes} draining` : "";
  return `${figure(count)}${draining}`;
}
