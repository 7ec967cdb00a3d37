/*
 * picolytics tracker extensions: the readable source of what assets/pico.ext.js adds
 * to assets/pico.js.
 *
 * Not a script of its own: scripts/build_tracker.py splices it into the tracker's
 * closure, at the pico.ext.src.js marker of tracker/pico.src.js, where it uses the
 * core's script (this <script> element), listen (the window's addEventListener) and
 * send(name, props). Plain ES5, like the core.
 *
 * Each feature is off unless its data- attribute is on the script tag, so without
 * them pico.ext.js does what pico.js does:
 *   data-outbound   a click on a link to another host sends "outbound";
 *   data-downloads  a click on a link whose path ends in a download extension sends
 *                   "download"; data-downloads="pdf,zip" replaces the default list.
 * Both send the props {url: the link's origin and path}: no query string, no
 * fragment and no user:password, which may carry tokens or personal data. A link
 * that is both outbound and a download counts once, as a download. The core's
 * sendBeacon is still delivered when the click navigates away.
 */
(function (data) {
  var outbound = data.outbound != null,
    downloads = data.downloads,
    // Any case, ".pdf" at the very end of the path; "" (the bare attribute) means
    // the default list.
    download =
      downloads != null &&
      RegExp(
        "\\.(" +
          (
            downloads ||
            // one literal: the minifier does not join strings
            "pdf,xlsx,docx,txt,rtf,csv,exe,key,pps,ppt,pptx,7z,pkg,rar,gz,zip,avi,mov,mp4,mpeg,wmv,midi,mp3,wav,wma,dmg,iso,msi"
          ).replace(/[\s,]+/g, "|") +
          ")$",
        "i"
      );

  // click comes from the main button (and Enter on a link), auxclick from the
  // others, of which only the middle one (button 1, a new tab) follows the link.
  function click(event) {
    var target = event.target,
      link = target.closest && target.closest("a"),
      name;
    // protocol is undefined on an SVG <a>, and mailto:, tel:, javascript: are no
    // visit to another site or a file.
    if (link && event.button < 2 && /^http/.test(link.protocol)) {
      name =
        download && download.test(link.pathname)
          ? "download"
          : outbound && link.host != location.host && "outbound";
      name && send(name, { url: link.origin + link.pathname });
    }
  }

  if (outbound || download) {
    listen("click", click);
    listen("auxclick", click);
  }
})(script.dataset);
