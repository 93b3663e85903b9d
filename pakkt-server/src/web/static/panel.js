// PAKKT panel: every few seconds, fetch this page again and swap in the
// fresh copy of each element marked data-live (statuses, tables, charts).
// Forms are never replaced, and an element holding the keyboard focus is
// left alone until the focus moves on. Without this script the pages still
// work; they only stop refreshing themselves.
(function () {
  "use strict";
  var PERIOD_MS = 3000;
  if (!document.querySelector("[data-live]")) { return; }
  function refresh() {
    if (document.visibilityState === "hidden") { return; }
    fetch(window.location.href, {
      credentials: "same-origin",
      headers: { "X-Pakkt-Refresh": "1" },
      redirect: "manual"
    }).then(function (response) {
      if (response.type === "opaqueredirect") {
        // Signed-in pages only redirect once the session has ended.
        window.location.assign("/signin");
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (text) {
      if (!text) { return; }
      var fresh = new DOMParser().parseFromString(text, "text/html");
      document.querySelectorAll("[data-live][id]").forEach(function (old) {
        var next = fresh.getElementById(old.id);
        if (!next || old.contains(document.activeElement)) { return; }
        old.replaceWith(document.importNode(next, true));
      });
    }).catch(function () { /* the next tick tries again */ });
  }
  window.setInterval(refresh, PERIOD_MS);
})();
