/**
 * A panel's reading, done again and again while the page is in view: at once, whenever
 * the panel asks (`soon`), and as soon as a hidden page is shown again. A hidden page is
 * not read: nobody sees it, and a console left open in a background tab costs the hub
 * nothing.
 */

export class Refresher {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #timer;
  #read;
  #failed;

  /**
   * @param {() => Promise<void>} read one reading; it asks for the next with `soon`
   * @param {(error: unknown) => void} failed told of a reading that threw
   * @param {AbortSignal} signal stops the readings
   */
  constructor(read, failed, signal) {
    this.#read = read;
    this.#failed = failed;
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.soon(0);
    }, { signal });
    signal.addEventListener("abort", () => clearTimeout(this.#timer));
    this.soon(0);
  }

  /** @param {number} delay ms until the next reading */
  soon(delay) {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      if (!document.hidden) this.#read().catch(this.#failed);
    }, delay);
  }
}
