/**
 * `/client.legacy.js`, the classic script for older screens: the same client as
 * `/client.js` (its types in client.d.ts), as the global `Hub` (`window.Hub`).
 */

import type * as Client from "./client.js";

declare global {
  var Hub: typeof Client;
}
