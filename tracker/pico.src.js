/*
 * picolytics tracker: the readable source of assets/pico.js.
 *
 * `make tracker` (scripts/build_tracker.py) minifies it into assets/pico.js, which
 * must stay under 1000 bytes, and, with tracker/pico.ext.src.js spliced in at the
 * marker near the end, into assets/pico.ext.js (opt-in outbound-link and download
 * events, under 2000 bytes); tests/test_tracker_build.py fails when a committed copy
 * is stale or over budget. Plain ES5 on purpose: the minifier (calmjs.parse) reads
 * ES5, and every browser with navigator.sendBeacon runs it.
 *
 * Each event is one JSON object POSTed as a text/plain body (no CORS preflight) to
 * <origin of this script's src>/p:
 *   n event name, l page URL, r referrer, sw/sh screen size, tz timezone,
 *   pr device pixel ratio, pd pixel depth; on "load" events only lt load time and
 *   fb time to first byte (ms since navigation start, fractional); p the props
 *   object of pico(name, props), left out when there is none.
 * Events: load, visible, hidden, nav (a single-page app changed the path),
 * hashchange, ping (every data-ping seconds, default 30, while visible), and
 * custom ones from pico("signup") or pico("signup", {plan: "pro"}). The server
 * validates names and props; the tracker forwards them as they are.
 * No cookies, no storage, no identifiers.
 *
 * Load it as a classic <script defer src=...> (async works too), not as a module:
 * its own src says where the server is.
 */
(function (document, navigator, location, screen) {
  var script = document.currentScript,
    endpoint = new URL("/p", script.src),
    // Do Not Track / Global Privacy Control count only when really on ("1" / true):
    // then nothing at all is sent. "1" == 1 and true == 1, while "0",
    // "unspecified", null, undefined and false are all != 1.
    off =
      navigator.doNotTrack == 1 || self.doNotTrack == 1 || navigator.globalPrivacyControl == 1,
    // Window's own addEventListener works without a receiver (WebIDL [Global]).
    listen = addEventListener,
    path = location.pathname,
    hash = location.hash;

  // Only the load event carries load time and TTFB (Navigation Timing Level 2); the
  // others leave the fields out. JSON.stringify drops p when props is undefined.
  function send(name, props) {
    var timing = name == "load" && performance.getEntriesByType("navigation")[0] || {},
      body = JSON.stringify({
        n: name,
        l: location.href,
        r: document.referrer,
        lt: timing.loadEventEnd,
        fb: timing.responseStart,
        sw: screen.width,
        sh: screen.height,
        tz: Intl.DateTimeFormat().resolvedOptions().timeZone,
        pr: devicePixelRatio,
        pd: screen.pixelDepth,
        p: props
      });
    // sendBeacon is delivered even when the page is being hidden or unloaded. It
    // returns false when the browser will not queue the body: then fetch (its
    // keepalive is a WebIDL boolean, so 1 means true, three bytes shorter).
    off ||
      navigator.sendBeacon(endpoint, body) ||
      fetch(endpoint, { method: "POST", body: body, keepalive: 1 });
  }

  // loadEventEnd stays 0 until every load listener has returned, so the load event
  // is sent one task later.
  function load() {
    setTimeout(send, 0, "load");
  }

  // Single-page apps: a new path (pushState, replaceState, back/forward) is a "nav",
  // a new #fragment alone a "hashchange", each sent once although Chromium fires
  // both popstate and hashchange when the fragment changes. A replaceState that
  // changes neither (say, only the query) sends nothing.
  function navigate() {
    // The comparison reads the old path before the assignment stores the new one.
    path != (path = location.pathname)
      ? send("nav")
      : hash != location.hash && send("hashchange");
    hash = location.hash;
  }

  ["pushState", "replaceState"].forEach(function (method) {
    var original = history[method];
    history[method] = function () {
      original.apply(this, arguments); // both return undefined
      navigate();
    };
  });
  listen("popstate", navigate);
  listen("hashchange", navigate);

  // visibilitychange bubbles from the document to the window; the new state is
  // the event name ("visible" or "hidden").
  listen("visibilitychange", function () {
    send(document.visibilityState);
  });

  // Time on page: a ping every data-ping seconds (default 30) while visible.
  setInterval(function () {
    document.hidden || send("ping");
  }, script.dataset.ping * 1e3 || 3e4);

  // A script added after the page loaded (by a tag manager) still reports the load.
  document.readyState == "complete" ? load() : listen("load", load);

  // assets/pico.ext.js only: the build puts tracker/pico.ext.src.js here, where it
  // sees script, listen and send; assets/pico.js gets nothing.
  /* pico.ext.src.js */

  // Custom events: pico("signup") or pico("signup", {plan: "pro"}). The server checks
  // the name (VALID_EVENT_NAMES, CUSTOM_EVENT_NAMES) and the props. (self is the
  // window, two bytes shorter.)
  self.pico = send;
})(document, navigator, location, screen);
