/* The agent's reasoning (issue 20): a long one is clamped to a few lines with "Show more" to read it whole. */
(() => {
  "use strict";
  function setUp() {
    for (const box of document.querySelectorAll(".reasoning-box[data-expandable]")) {
      const text = box.querySelector(".reasoning");
      const button = box.querySelector(".reasoning-toggle");
      if (!text || !button || box.dataset.ready) continue;
      box.dataset.ready = "1";
      // Only a box that is really cut off gets the button; its size changes with the layout (phone, panes).
      const update = () => {
        button.hidden = !box.classList.contains("expanded") && text.scrollHeight <= text.clientHeight + 2;
      };
      button.addEventListener("click", () => {
        const open = box.classList.toggle("expanded");
        button.setAttribute("aria-expanded", String(open));
        button.textContent = open ? "Show less" : "Show more";
        update();
      });
      new ResizeObserver(update).observe(text);
      update();
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
