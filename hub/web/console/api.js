/**
 * The hub's REST API as the console calls it: the token as a bearer header (never in a
 * URL), paths relative to the page so a node behind a path prefix still works, and the
 * hub's `{"error": {"code", "message"}}` turned into an `ApiError`.
 */

const READ_RETRIES = 3;
/** The longest `Retry-After` a read waits for before giving up, in seconds. */
const RETRY_AFTER_CAP = 30;

/** The hub refused a request, or could not be reached (`status` 0). */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {number} retryAfter seconds, 0 when not said
   */
  constructor(status, code, message, retryAfter = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** One line for a person: what the hub said, with its status. */
  describe() {
    return this.status === 0 ? this.message : `${this.status} ${this.code}: ${this.message}`;
  }
}

/**
 * @typedef {object} Answer
 * @property {number} status
 * @property {any} body the JSON body
 * @property {Headers} headers
 */

export class Api {
  /** @param {string} token */
  constructor(token) {
    this.token = token;
  }

  /**
   * One request. A network failure is an `ApiError` with status 0.
   * @param {string} method
   * @param {string} path relative, e.g. `v1/devices`
   * @param {{query?: Record<string, string | number | undefined>, body?: string, headers?: Record<string, string>, signal?: AbortSignal}} [options]
   * @returns {Promise<Answer>}
   */
  async request(method, path, { query, body, headers, signal } = {}) {
    const url = new URL(path, document.baseURI);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    let response;
    try {
      response = await fetch(url, {
        method,
        body,
        signal,
        cache: "no-store",
        headers: {
          Authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
          ...headers,
        },
      });
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") throw error;
      throw new ApiError(0, "unreachable", "the hub cannot be reached");
    }
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (!response.ok) {
      const said = parsed?.error ?? {};
      const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
      throw new ApiError(
        response.status,
        typeof said.code === "string" ? said.code : "error",
        typeof said.message === "string" ? said.message : response.statusText || "refused",
        Number.isFinite(retryAfter) ? retryAfter : 0,
      );
    }
    return { status: response.status, body: parsed, headers: response.headers };
  }

  /**
   * A read, retried after the hub's `Retry-After` when it says 429 (the per-token read
   * rate: a large fleet's listing is many pages).
   * @param {string} path
   * @param {Record<string, string | number | undefined>} [query]
   * @param {AbortSignal} [signal]
   */
  async get(path, query, signal) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return (await this.request("GET", path, { query, signal })).body;
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 429 || attempt >= READ_RETRIES) throw error;
        await sleep(Math.min(Math.max(error.retryAfter, 1), RETRY_AFTER_CAP) * 1000, signal);
      }
    }
  }
}

/** @param {string} room */
export function roomPath(room) {
  return `v1/rooms/${encodeURIComponent(room)}`;
}

/**
 * @param {number} ms
 * @param {AbortSignal} [signal]
 */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}
