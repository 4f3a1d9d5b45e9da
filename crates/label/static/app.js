// Keyboard shortcuts for the labelling page, and the forward after login. Served as a file because the
// Content-Security-Policy allows no inline script.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // After login: continue to the task page (a same-site navigation, so the SameSite=Strict cookie is sent).
  var next = document.getElementById("next");
  if (next && next.dataset.next) {
    window.location.replace(next.dataset.next);
    return;
  }

  // Every button with data-keys="1 a" is pressed by either key.
  var byKey = {};
  document.querySelectorAll("button[data-keys]").forEach(function (b) {
    b.dataset.keys.split(" ").forEach(function (k) { byKey[k] = b; });
  });
  var sent = false;
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    var t = e.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
    var b = byKey[e.key.toLowerCase()];
    if (!b || sent) return;
    e.preventDefault();
    sent = true; // one label per page, even if a key is hit twice before the next page arrives
    b.click();
  });
  // Coming back with the browser's Back button restores this page from its cache: allow a new answer.
  window.addEventListener("pageshow", function (e) {
    if (!e.persisted) return;
    sent = false;
    document.querySelectorAll("form").forEach(function (f) { delete f.dataset.sent; });
  });
  // A double click on a button sends one label too.
  document.querySelectorAll("form").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (f.dataset.sent) { e.preventDefault(); return; }
      f.dataset.sent = "1";
    });
  });
});
