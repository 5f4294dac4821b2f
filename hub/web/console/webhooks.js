/**
 * The tenant's webhook endpoints (`GET /v1/webhooks`), each with its latest deliveries,
 * read again every few seconds while the page is in view. A failed delivery can be sent
 * again, an endpoint deleted, and a new one registered from the form. The hub shows an
 * endpoint's signing secret only in the answer that registers it: the panel shows it
 * then, and nowhere else.
 */

import { ApiError } from "./api.js";
import { age, clock, dateTime, figure } from "./format.js";
import { Refresher } from "./refresh.js";

/** Milliseconds between two readings. */
export const INTERVAL = 5000;
/** Deliveries listed per endpoint, newest first. */
const SHOWN = 10;
/** Milliseconds a delete button waits for the second click that confirms it. */
const CONFIRM_WINDOW = 4000;
const COLUMNS = ["time", "event", "state", "tries", "status", "next"];

/**
 * @typedef {{id: string, url: string, events: string[], description?: string | null, created?: number}} Hook
 * @typedef {{id: string, type: string, device?: string | null, time: number, state: string,
 *   attempts: number, status: number | null, error: string | null, next: number | null}} Delivery
 * @typedef {{deliveries: Delivery[]} | {error: string}} Deliveries
 */

/** One endpoint: what it is, and its deliveries. */
class EndpointView {
  id;
  element;
  #meta;
  #note;
  #problem;
  #listing;
  #body;

  /** @param {Hook} hook */
  constructor(hook) {
    this.id = hook.id;
    this.element = document.createElement("div");
    this.element.className = "endpoint";
    this.element.dataset.id = hook.id;
    const head = document.createElement("p");
    head.className = "title";
    const url = document.createElement("code");
    url.className = "url";
    url.textContent = hook.url;
    url.title = hook.url;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "quiet";
    remove.dataset.action = "delete";
    remove.dataset.hook = hook.id;
    remove.textContent = "Delete";
    head.append(url, remove);
    this.#meta = document.createElement("p");
    this.#meta.className = "muted";
    this.#note = document.createElement("p");
    this.#note.className = "muted";
    this.#problem = document.createElement("p");
    this.#problem.className = "panel-message";
    this.#problem.hidden = true;
    const scroller = document.createElement("div");
    scroller.className = "deliveries";
    const table = document.createElement("table");
    table.className = "delivery-table";
    const row = table.createTHead().insertRow();
    for (const text of COLUMNS) {
      const th = document.createElement("th");
      th.textContent = text;
      row.append(th);
    }
    this.#body = table.createTBody();
    scroller.append(table);
    this.#listing = scroller;
    this.element.append(head, this.#meta, this.#problem, this.#note, scroller);
  }

  /** @param {Hook} hook */
  describe(hook) {
    const parts = [(hook.events ?? []).join(", ")];
    if (hook.description) parts.push(hook.description);
    if (typeof hook.created === "number") parts.push(`since ${dateTime(hook.created)}`);
    this.#meta.textContent = parts.join(" · ");
  }

  /**
   * @param {Deliveries} answer
   * @param {number} now
   */
  show(answer, now) {
    if ("error" in answer) {
      this.#say(`The deliveries could not be read: ${answer.error}`);
      return;
    }
    const deliveries = answer.deliveries.slice(0, SHOWN);
    this.#say(deliveries.length === 0 ? "no deliveries yet" : "");
    this.#listing.hidden = deliveries.length === 0;
    this.#body.replaceChildren(...deliveries.map((delivery) => deliveryRow(this.id, delivery, now)));
  }

  /** What went wrong with the last retry or delete; it stays until the next one. @param {string} text */
  failed(text) {
    this.#problem.textContent = text;
    this.#problem.hidden = text === "";
  }

  /** @param {string} text */
  #say(text) {
    this.#note.textContent = text;
    this.#note.hidden = text === "";
  }
}

/**
 * @param {string} hook
 * @param {Delivery} delivery
 * @param {number} now
 */
function deliveryRow(hook, delivery, now) {
  const row = document.createElement("tr");
  row.dataset.id = delivery.id;
  row.dataset.state = delivery.state;
  const cell = (/** @type {string} */ name, /** @type {string} */ text, /** @type {string} */ title = "") => {
    const td = row.insertCell();
    td.className = name;
    td.textContent = text;
    td.title = title;
    return td;
  };
  cell("time", clock(delivery.time), dateTime(delivery.time));
  // The device goes under the event's name: the side column has no room for both.
  const device = document.createElement("span");
  device.className = "device";
  device.textContent = delivery.device ?? "";
  cell("event", delivery.type).append(device);
  cell("state", delivery.state);
  cell("tries", figure(delivery.attempts));
  cell("answer", typeof delivery.status === "number" ? String(delivery.status) : (delivery.error ?? "–"), delivery.error ?? "");
  const next = typeof delivery.next === "number" ? delivery.next : null;
  const when = cell("next", delivery.state === "pending" && next !== null ? `in ${age(now, next)}` : "–", next === null ? "" : dateTime(next));
  if (delivery.state === "failed") {
    // A failed message has no next attempt but the one asked for here.
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "quiet";
    retry.dataset.action = "retry";
    retry.dataset.hook = hook;
    retry.dataset.delivery = delivery.id;
    retry.textContent = "Retry";
    when.replaceChildren(retry);
  }
  return row;
}

export class WebhooksPanel {
  #api;
  #refused;
  /** @type {Record<string, string>} an admin names the tenant; an operator has one */
  #scope;
  #elements;
  /** @type {Map<string, EndpointView>} by endpoint id, in the hub's order */
  #views = new Map();
  /** @type {Refresher | undefined} */
  #refresher;
  /** Readings started: only the latest one is shown. */
  #reads = 0;
  #abort = new AbortController();

  /**
   * @param {import("./api.js").Api} api
   * @param {string | null} refusal why this token may not manage webhooks, or null when it may
   * @param {(message: string) => void} refused called when the hub refuses the token
   * @param {string | null} tenant the tenant an admin's requests name; null for an operator
   */
  constructor(api, refusal, refused, tenant) {
    this.#api = api;
    this.#refused = refused;
    this.#scope = tenant === null ? {} : { tenant };
    const byId = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
    this.#elements = {
      message: byId("webhooks-message"),
      time: byId("webhooks-time"),
      list: byId("webhooks-list"),
      form: /** @type {HTMLFormElement} */ (byId("webhook-form")),
      register: /** @type {HTMLButtonElement} */ (byId("wh-register")),
      result: byId("webhook-result"),
      secret: byId("webhook-secret"),
      secretUrl: byId("wh-secret-url"),
      secretValue: byId("wh-secret"),
      secretDone: byId("wh-secret-done"),
    };
    const { form, register, list, secretDone } = this.#elements;
    register.disabled = refusal !== null;
    form.classList.toggle("refused", refusal !== null);
    if (refusal !== null) {
      this.#say(refusal);
      return;
    }
    const signal = this.#abort.signal;
    form.addEventListener("submit", (submitted) => {
      submitted.preventDefault();
      this.#register().catch((error) => this.#result("error", `Not registered: ${error}`));
    }, { signal });
    list.addEventListener("click", (clicked) => {
      const button = /** @type {HTMLElement} */ (clicked.target).closest("button[data-action]");
      if (button instanceof HTMLButtonElement) this.#act(button);
    }, { signal });
    secretDone.addEventListener("click", () => this.#forgetSecret(), { signal });
    this.#refresher = new Refresher(
      () => this.#read(),
      (error) => this.#say(`The webhooks could not be shown: ${error}`),
      signal,
    );
  }

  async #read() {
    const reading = ++this.#reads;
    const signal = this.#abort.signal;
    try {
      const { webhooks } = await this.#api.get("v1/webhooks", this.#scope, signal);
      const answers = await Promise.all(webhooks.map((/** @type {Hook} */ hook) => this.#deliveries(hook)));
      if (reading !== this.#reads) return; // a later reading shows instead
      this.#show(webhooks, answers);
      this.#say("");
      this.#refresher?.soon(INTERVAL);
    } catch (error) {
      if (signal.aborted || reading !== this.#reads) return;
      if (!(error instanceof ApiError)) throw error;
      if (error.status === 401) {
        this.#refused(error.message);
      } else if (error.status === 403) {
        this.#say(`This token may not manage webhooks: ${error.message}.`);
      } else if (error.status === 404) {
        this.#say("This node has no webhooks: it runs an older version of the hub.");
      } else {
        this.#say(`The webhooks could not be read: ${error.describe()}; trying again.`);
        this.#refresher?.soon(INTERVAL);
      }
    }
  }

  /**
   * One endpoint's deliveries, or why they could not be read; null when the endpoint was
   * deleted since it was listed.
   * @param {Hook} hook
   * @returns {Promise<Deliveries | null>}
   */
  async #deliveries(hook) {
    try {
      return await this.#api.get(`${hookPath(hook.id)}/deliveries`, { ...this.#scope, limit: SHOWN }, this.#abort.signal);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status === 401) throw error;
      return error.status === 404 ? null : { error: error.describe() };
    }
  }

  /**
   * @param {Hook[]} hooks
   * @param {(Deliveries | null)[]} answers
   */
  #show(hooks, answers) {
    const now = Date.now();
    /** @type {Map<string, EndpointView>} */
    const views = new Map();
    hooks.forEach((hook, index) => {
      const answer = answers[index];
      if (answer === null) return;
      const view = this.#views.get(hook.id) ?? new EndpointView(hook);
      view.describe(hook);
      view.show(answer, now);
      views.set(hook.id, view);
    });
    this.#views = views;
    // The views are kept, not redrawn: a delete button half-way to confirmed stays so.
    const shown = [...views.values()].map((view) => view.element);
    if (shown.length === 0) {
      const none = document.createElement("p");
      none.className = "muted";
      none.textContent = "No endpoint is registered: the form below adds one.";
      shown.push(none);
    }
    this.#elements.list.replaceChildren(...shown);
    this.#elements.time.textContent = `at ${clock(now)}`;
  }

  /** @param {HTMLButtonElement} button */
  #act(button) {
    const hook = button.dataset.hook ?? "";
    const view = this.#views.get(hook);
    if (button.dataset.action === "retry") {
      const delivery = button.dataset.delivery ?? "";
      button.disabled = true;
      button.textContent = "retrying…";
      void this.#send("POST", `${hookPath(hook)}/deliveries/${encodeURIComponent(delivery)}/retry`).then((problem) => {
        view?.failed(problem === null ? "" : `Delivery ${delivery} was not sent again: ${problem}`);
      });
    } else if (button.dataset.armed === "true") {
      button.disabled = true;
      void this.#send("DELETE", hookPath(hook), true).then((problem) => {
        if (problem === null) return;
        view?.failed(`Not deleted: ${problem}`);
        disarm(button);
        button.disabled = false;
      });
    } else {
      // A deleted endpoint's secret goes with it: the first click only asks.
      button.dataset.armed = "true";
      button.textContent = "Delete for good?";
      setTimeout(() => disarm(button), CONFIRM_WINDOW);
    }
  }

  /**
   * A change the listing then shows, read again at once.
   * @param {string} method
   * @param {string} path
   * @param {boolean} [goneIsDone] a 404 means what was asked for is already so
   * @returns {Promise<string | null>} what the hub said when it refused, or null
   */
  async #send(method, path, goneIsDone = false) {
    try {
      await this.#api.request(method, path, { query: this.#scope, signal: this.#abort.signal });
      return null;
    } catch (error) {
      if (this.#abort.signal.aborted) return null;
      if (!(error instanceof ApiError)) return String(error);
      if (error.status === 401) this.#refused(error.message);
      return goneIsDone && error.status === 404 ? null : error.describe();
    } finally {
      if (!this.#abort.signal.aborted) this.#refresher?.soon(0);
    }
  }

  async #register() {
    const { form, register } = this.#elements;
    const fields = new FormData(form);
    const url = String(fields.get("url") ?? "").trim();
    const events = fields.getAll("events").map(String);
    const description = String(fields.get("description") ?? "").trim();
    if (events.length === 0) {
      this.#result("error", "Choose at least one event.");
      return;
    }
    const body = { url, events, ...(description === "" ? {} : { description }), ...this.#scope };
    register.disabled = true;
    this.#result("pending", "registering…");
    try {
      const answer = await this.#api.request("POST", "v1/webhooks", { body: JSON.stringify(body), signal: this.#abort.signal });
      this.#result("ok", `${answer.status} registered ${answer.body.id}`);
      this.#showSecret(answer.body.url, answer.body.secret);
      form.reset();
      this.#refresher?.soon(0);
    } catch (error) {
      if (this.#abort.signal.aborted) return;
      if (!(error instanceof ApiError)) throw error;
      if (error.status === 401) this.#refused(error.message);
      else if (error.status === 0) {
        // The answer may be what was lost: the endpoint would then be listed, its secret unseen.
        this.#result("error", "The hub could not be reached. If the endpoint is listed above, it was registered: delete it and register it again to see its secret.");
      } else this.#result("error", `Refused: ${error.describe()}`);
    } finally {
      if (!this.#abort.signal.aborted) register.disabled = false;
    }
  }

  /**
   * @param {string} url
   * @param {string} secret
   */
  #showSecret(url, secret) {
    this.#elements.secretUrl.textContent = url;
    this.#elements.secretValue.textContent = secret;
    this.#elements.secret.hidden = false;
  }

  /** The secret leaves the page, not only the screen. */
  #forgetSecret() {
    this.#elements.secretUrl.textContent = "";
    this.#elements.secretValue.textContent = "";
    this.#elements.secret.hidden = true;
  }

  /**
   * @param {"ok" | "error" | "pending"} kind
   * @param {string} text
   */
  #result(kind, text) {
    const result = this.#elements.result;
    result.dataset.kind = kind;
    result.textContent = text;
  }

  /** @param {string} text */
  #say(text) {
    this.#elements.message.textContent = text;
    this.#elements.message.hidden = text === "";
  }

  stop() {
    this.#abort.abort();
    this.#views.clear();
    this.#elements.list.replaceChildren();
    this.#elements.time.textContent = "";
    this.#elements.result.textContent = "";
    this.#elements.register.disabled = false;
    this.#elements.form.classList.remove("refused");
    this.#elements.form.reset();
    this.#forgetSecret();
    this.#say("");
  }
}

/** @param {HTMLButtonElement} button */
function disarm(button) {
  button.dataset.armed = "false";
  button.textContent = "Delete";
}

/** @param {string} id */
function hookPath(id) {
  return `v1/webhooks/${encodeURIComponent(id)}`;
}
