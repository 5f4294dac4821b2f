/**
 * What /client.legacy.js uses in place of globals that older engines lack or cannot
 * construct, without touching the page's own: each is the engine's where it has it.
 * esbuild puts them in for the bundle's references (`--inject`).
 */

/** The script's own URL, for `import.meta.url`, which a classic script does not have:
 * `document.currentScript` names the script only while it runs, which is now. */
export const scriptUrl = document.currentScript ? document.currentScript.src : location.href;

/** Listeners as the DOM keeps them, for engines whose EventTarget cannot be constructed
 * (before Chromium 64): in order, each once, `once` honoured, errors reported, not thrown. */
class Listeners {
  #listeners = new Map();

  addEventListener(type, listener, options) {
    if (listener === null || listener === undefined) return;
    const list = this.#listeners.get(type) ?? [];
    if (list.some((entry) => entry.listener === listener)) return;
    const once = typeof options === "object" && options !== null && options.once === true;
    list.push({ listener, once, removed: false });
    this.#listeners.set(type, list);
  }

  removeEventListener(type, listener) {
    const list = this.#listeners.get(type) ?? [];
    const index = list.findIndex((entry) => entry.listener === listener);
    if (index === -1) return;
    list[index].removed = true;
    list.splice(index, 1);
  }

  dispatchEvent(event) {
    Object.defineProperty(event, "target", { value: this, configurable: true });
    Object.defineProperty(event, "currentTarget", { value: this, configurable: true });
    for (const entry of [...(this.#listeners.get(event.type) ?? [])]) {
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
}

function constructible(type) {
  try {
    new type();
    return true;
  } catch {
    return false;
  }
}

const eventTarget = constructible(window.EventTarget) ? window.EventTarget : Listeners;

/** An abort for engines without AbortController (before Chromium 66), whose fetch ignores
 * a signal: the fetch below stops waiting instead. */
class Abort {
  signal = { aborted: false, onabort: null };

  abort() {
    if (this.signal.aborted) return;
    this.signal.aborted = true;
    if (this.signal.onabort) this.signal.onabort();
  }
}

const abortable = typeof window.AbortController === "function";

function fetchUntilAborted(input, init = {}) {
  const { signal, ...rest } = init;
  const fetched = window.fetch(input, rest);
  if (!signal) return fetched;
  return new Promise((resolve, reject) => {
    signal.onabort = () => reject(new DOMException("The fetch was aborted.", "AbortError"));
    fetched.then(resolve, reject);
  });
}

export { eventTarget as EventTarget };
export const AbortController = abortable ? window.AbortController : Abort;
export const fetch = abortable ? (input, init) => window.fetch(input, init) : fetchUntilAborted;
