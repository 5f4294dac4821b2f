/**
 * The operators' console: a token in, then the fleet, a room's events, a broadcast form
 * with its receipts, the node's figures and the tenant's webhooks, all live. This module
 * wires the panels to one token; each panel is a module of its own.
 *
 * The token comes from the URL fragment (`/console#token=...`, which the browser never
 * sends to the server, and which is taken off the address at once) or from the form. It
 * lives in this tab's memory only. It goes to the hub as a bearer header on REST calls,
 * and in the socket's `?token=` (browsers cannot set a socket's headers; the hub never
 * logs it).
 */

import { Api, ApiError } from "./api.js";
import { BroadcastForm } from "./broadcast.js";
import { FleetPanel } from "./fleet-panel.js";
import { Live } from "./live.js";
import { Receipts } from "./receipts.js";
import { RoomFeed } from "./room-feed.js";
import { StatsPanel } from "./stats.js";
import { claimsOf, mayOperate, takeFragmentToken, unusable } from "./token.js";
import { WebhooksPanel } from "./webhooks.js";

/** Milliseconds the listing waits for the `status` subscription before it goes ahead. */
const LIVE_WAIT = 3000;
/** The longest delay `setTimeout` takes; a token expiring later needs no timer. */
const LONGEST_TIMER = 2 ** 31 - 1;

const byId = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Everything shown for one token; closed when the token is changed, refused or expires. */
class Session {
  #closed = false;
  /** @type {ReturnType<typeof setTimeout>[]} */
  #timers = [];

  /**
   * @param {string} token
   * @param {import("./token.js").Claims} claims
   * @param {(message: string) => void} end the session must end: back to the form, saying why
   */
  constructor(token, claims, end) {
    this.api = new Api(token);
    const operate = mayOperate(claims);
    const role = claims.role ?? "unknown";
    const refused = (/** @type {string} */ message) => end(`The hub refused this token: ${message}.`);
    this.live = new Live(token, link, (message) => this.#socketRefused(message, end));
    this.fleet = new FleetPanel(this.api, refused);
    this.feed = new RoomFeed(this.live);
    this.receipts = new Receipts(this.api, byId("receipts"));
    this.broadcast = new BroadcastForm(
      this.api,
      this.receipts,
      operate ? null : `Broadcasting is for operators and admins: this token is a ${role}'s.`,
    );
    this.stats = new StatsPanel(
      this.api,
      operate ? null : `The node's figures are for operators and admins: this token is a ${role}'s.`,
      refused,
    );
    this.webhooks = new WebhooksPanel(
      this.api,
      operate ? null : `Webhooks are for operators and admins: this token is a ${role}'s.`,
      refused,
      claims.role === "admin" ? claims.tenant ?? null : null,
    );
    this.#watchStatus();
    if (typeof claims.exp === "number") {
      const left = claims.exp * 1000 - Date.now();
      if (left < LONGEST_TIMER) {
        this.#timers.push(setTimeout(() => {
          end(`This token expired at ${new Date(/** @type {number} */ (claims.exp) * 1000).toLocaleTimeString()}: paste a new one to carry on.`);
        }, Math.max(0, left)));
      }
    }
    this.live.start();
  }

  /**
   * The fleet follows the `status` room: listed once its subscription is live (so no
   * event falls between the listing and the live updates), listed again whenever the room
   * could not be resumed. A socket that does not come up in time does not hold the
   * listing back; it is then read again once the room is live.
   */
  #watchStatus() {
    let live = false;
    let listed = false;
    this.#timers.push(setTimeout(() => {
      if (live || this.#closed) return;
      listed = true;
      void this.fleet.list();
    }, LIVE_WAIT));
    this.live.listen("status", {
      state: () => {
        if (live) return;
        live = true;
        void this.fleet.list();
      },
      lost: () => void this.fleet.list(),
      event: (event) => {
        this.fleet.apply(event);
        this.receipts.apply(event);
      },
      refused: (code, message) => {
        notify("warning", `Live updates are refused (${code}: ${message}): the fleet shows what it was when listed.`);
        if (!listed) void this.fleet.list();
      },
    });
  }

  /**
   * The socket keeps being refused: ask the REST API why (a browser is never told a
   * handshake's status). A token it refuses ends the session.
   * @param {string} detail
   * @param {(message: string) => void} end
   */
  async #socketRefused(detail, end) {
    try {
      await this.api.get("v1/devices", { limit: 1 });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        end(`The hub refused this token: ${error.message}.`);
        return;
      }
    }
    notify("warning", `The live connection is refused (${detail}); what is shown is no longer updated.`);
  }

  async close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.fleet.stop();
    this.feed.stop();
    this.receipts.stop();
    this.broadcast.stop();
    this.stats.stop();
    this.webhooks.stop();
    await this.live.stop();
    link("off", "");
  }
}

/** @type {Session | null} */
let session = null;

/**
 * Check a token, then open a session with it. Nothing is connected with a token the hub
 * refuses: one read says so, with the hub's reason.
 * @param {string} token
 */
async function open(token) {
  const claims = claimsOf(token);
  const problem = unusable(claims, Date.now());
  if (problem !== null || claims === null) {
    showLogin(problem ?? "");
    return;
  }
  notify("info", "checking the token…");
  try {
    await new Api(token).get("v1/devices", { limit: 1 });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 401) showLogin(`The hub refused this token: ${error.message}.`);
    else if (error.status === 403) showLogin(`This token may not see the fleet: ${error.message}.`);
    else showLogin(`The token could not be checked: ${error.describe()}.`);
    return;
  }
  await close();
  notify("info", "");
  byId("login").hidden = true;
  byId("console").hidden = false;
  byId("change-token").hidden = false;
  byId("sign-out").hidden = false;
  byId("identity").textContent = identity(claims);
  session = new Session(token, claims, (message) => {
    close().then(() => showLogin(message), () => showLogin(message));
  });
}

async function close() {
  const ending = session;
  session = null;
  await ending?.close();
}

/** @param {import("./token.js").Claims} claims */
function identity(claims) {
  const parts = [`${claims.sub ?? "?"} (${claims.role ?? "?"})`, `tenant ${claims.tenant ?? "?"}`];
  if (typeof claims.exp === "number") parts.push(`token until ${new Date(claims.exp * 1000).toLocaleString()}`);
  return parts.join(" · ");
}

/**
 * Back to the token form, saying why (an empty message says nothing).
 * @param {string} message
 */
function showLogin(message) {
  const inSession = session !== null;
  byId("login").hidden = false;
  byId("login-cancel").hidden = !inSession;
  byId("console").hidden = !inSession;
  byId("change-token").hidden = true;
  byId("sign-out").hidden = !inSession;
  if (!inSession) byId("identity").textContent = "";
  notify("error", message);
  /** @type {HTMLInputElement} */ (byId("login-token")).focus();
}

/**
 * The message above everything: refusals, expiry, a socket that will not come up.
 * @param {"info" | "warning" | "error"} kind
 * @param {string} message "" hides it
 */
function notify(kind, message) {
  const notice = byId("notice");
  notice.dataset.kind = kind;
  notice.textContent = message;
  notice.hidden = message === "";
}

/**
 * The connection, in the header; the detail shows on hover.
 * @param {import("./live.js").LinkState | null} state null leaves the state as it is
 * @param {string} detail
 */
function link(state, detail) {
  const element = byId("link");
  element.title = detail;
  if (state === null) return;
  element.dataset.state = state;
  const words = { connecting: "connecting…", live: "live", reconnecting: "reconnecting", refused: "refused", off: "not connected" };
  element.textContent = words[state];
}

function main() {
  const form = /** @type {HTMLFormElement} */ (byId("login"));
  const input = /** @type {HTMLInputElement} */ (byId("login-token"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    input.value = "";
    open(token).catch((error) => showLogin(`The console failed: ${error}`));
  });
  byId("login-cancel").addEventListener("click", () => {
    byId("login").hidden = true;
    byId("change-token").hidden = false;
    notify("info", "");
  });
  byId("change-token").addEventListener("click", () => showLogin(""));
  byId("sign-out").addEventListener("click", () => {
    close().then(() => showLogin(""), (error) => showLogin(`${error}`));
  });
  const token = takeFragmentToken(window.location, window.history);
  if (token === null) showLogin("");
  else open(token).catch((error) => showLogin(`The console failed: ${error}`));
}

main();
