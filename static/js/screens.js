/* Every screen fits (issue 20): the phone decision bar, and keyboard reach into boxes that scroll.
   Loaded on every page from base.html; no inline script (the CSP forbids it). */
(function () {
  "use strict";

  // The bar's links go to the decision card and put the caret where the decision is made.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("[data-decision-jump]");
    if (!link) return;
    var target = document.querySelector(link.getAttribute("data-decision-jump"));
    if (!target) return; // the card is gone (decided meanwhile): the plain link still scrolls to what is there
    event.preventDefault();
    target.scrollIntoView({ block: "center" });
    target.focus({ preventScroll: true });
  });

  function nameFor(box) {
    var holder = box.closest("section, details, .card");
    var heading = holder && holder.querySelector("h2, h3, summary");
    return (heading && heading.textContent.trim()) || "Scrollable text";
  }

  // A box that scrolls must be reachable by keyboard and announced by name (WCAG 2.1.1). Whether it scrolls depends
  // on its content and the window's width, so boxes the templates did not mark are checked here, as they appear.
  function reachScrollers() {
    document.querySelectorAll("main pre, main .code, main [data-scrolls]").forEach(function (box) {
      if (box.hasAttribute("tabindex") || box.matches("textarea, input, select")) return;
      if (box.scrollHeight <= box.clientHeight + 1 && box.scrollWidth <= box.clientWidth + 1) return;
      box.tabIndex = 0;
      if (!box.hasAttribute("role")) box.setAttribute("role", "region");
      if (!box.hasAttribute("aria-label") && !box.hasAttribute("aria-labelledby")) {
        box.setAttribute("aria-label", nameFor(box));
      }
    });
    var bar = document.getElementById("decision-bar");
    if (bar) bar.hidden = !document.getElementById("decide-h"); // no decision left to make: no bar
  }

  var queued = false;
  function soon() {
    if (queued) return;
    queued = true;
    window.requestAnimationFrame(function () {
      queued = false;
      reachScrollers();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    reachScrollers();
    var main = document.getElementById("main");
    if (main && window.MutationObserver) new MutationObserver(soon).observe(main, { childList: true, subtree: true });
    window.addEventListener("resize", soon);
    document.addEventListener("toggle", soon, true); // a <details> opened: what it shows may scroll
  });
})();
