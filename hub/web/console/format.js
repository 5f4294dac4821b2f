/** How the console writes times, ages and figures: short, and the same in every panel. */

const pad = (n, width = 2) => String(n).padStart(width, "0");

/**
 * A time of day from ms since the epoch, in the browser's time zone.
 * @param {number} ms
 * @param {boolean} [millis] with milliseconds
 */
export function clock(ms, millis = false) {
  const at = new Date(ms);
  const text = `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`;
  return millis ? `${text}.${pad(at.getMilliseconds(), 3)}` : text;
}

/** A date and time, for what may be days old. @param {number} ms */
export function dateTime(ms) {
  const at = new Date(ms);
  return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ${clock(ms)}`;
}

/**
 * How long ago, in one unit: `12 s`, `4 min`, `3 h`, `2 d`.
 * @param {number} ms
 * @param {number} now
 */
export function age(ms, now) {
  const seconds = Math.max(0, Math.round((now - ms) / 1000));
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

const grouped = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });

/** A count or a rate, grouped by thousands. @param {number | null | undefined} n */
export function figure(n) {
  return typeof n === "number" && Number.isFinite(n) ? grouped.format(n) : "–";
}

/** JSON on one line, cut to `most` characters. @param {unknown} value @param {number} most */
export function compact(value, most = 240) {
  const text = JSON.stringify(value) ?? "";
  return text.length > most ? `${text.slice(0, most - 1)}…` : text;
}

/** A value from the hub as display text: strings as they are, numbers rounded. @param {unknown} value */
export function shown(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(1);
  return typeof value === "string" ? value : compact(value, 80);
}
