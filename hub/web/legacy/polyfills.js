// The start of /client.legacy.js, before the bundle: what the bundle calls that Chromium 53
// to 65 lack is added where it is missing, as the standard defines it. The bundle reads
// Object.getOwnPropertyDescriptors (Chromium 54) as it starts, so this cannot wait for the
// bundle's own code.
(function () {
  "use strict";
  function define(target, name, value) {
    if (!(name in target)) {
      Object.defineProperty(target, name, { value: value, writable: true, configurable: true });
    }
  }
  define(Object, "getOwnPropertyDescriptors", function getOwnPropertyDescriptors(object) {
    const descriptors = {};
    for (const key of Reflect.ownKeys(object)) {
      const descriptor = Object.getOwnPropertyDescriptor(object, key);
      if (descriptor !== undefined) descriptors[key] = descriptor;
    }
    return descriptors;
  });
  // Chromium 63
  define(Promise.prototype, "finally", function (callback) {
    if (typeof callback !== "function") return this.then(callback, callback);
    return this.then(
      (value) => Promise.resolve(callback()).then(() => value),
      (reason) =>
        Promise.resolve(callback()).then(() => {
          throw reason;
        })
    );
  });
  // Chromium 66
  define(String.prototype, "trimEnd", function trimEnd() {
    return String(this).replace(/[\s\uFEFF\xA0]+$/, "");
  });
})();
