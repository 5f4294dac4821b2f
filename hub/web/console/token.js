/**
 * The operator's token: taken from the URL fragment (which browsers never send to the
 * server) or the login form, and what its claims say. The claims are read unverified, for
 * display and to leave out views the hub would refuse anyway; the hub decides.
 */

/**
 * @typedef {object} Claims
 * @property {string} [sub]
 * @property {string} [role]
 * @property {string} [tenant]
 * @property {number} [exp] seconds since the epoch
 */

/**
 * Take `#token=...` off the address, so it is neither bookmarked nor shown; other fragment
 * parameters stay.
 * @param {Location} location
 * @param {History} history
 * @returns {string | null}
 */
export function takeFragmentToken(location, history) {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
  return token.trim() || null;
}

/**
 * The claims of a JWT, or null when it is not one.
 * @param {string} token
 * @returns {Claims | null}
 */
export function claimsOf(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "="));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    return claims !== null && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** Operators and admins broadcast and read stats; dashboards only watch. @param {Claims} claims */
export function mayOperate(claims) {
  return claims.role === "operator" || claims.role === "admin";
}

/**
 * Why the console cannot work with these claims at all, or null when it can try.
 * @param {Claims | null} claims
 * @param {number} now ms since the epoch
 */
export function unusable(claims, now) {
  if (claims === null) return "This is not a token: a JWT has three parts separated by dots.";
  if (typeof claims.exp === "number" && claims.exp * 1000 <= now) {
    return `This token expired at ${new Date(claims.exp * 1000).toLocaleString()}: mint a new one (hub token ...).`;
  }
  if (claims.role === "device") {
    return "This is a device's token: the console needs a dashboard's, an operator's or an admin's.";
  }
  if (claims.role === "admin" && typeof claims.tenant !== "string") {
    return "This admin token names no tenant: the console works within one; mint one with --tenant.";
  }
  return null;
}
