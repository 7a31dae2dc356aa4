// Countersign's Active access countdowns (issue 23): every [data-countdown] counts down from the seconds the server
// said were left when it drew the element (data-seconds-left), so the visitor's clock does not matter. Elements
// redrawn by live updates (static/js/live.js) start again from their own number.
(function () {
  "use strict";
  const UNITS = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];

  function words(seconds) {
    const parts = [];
    let rest = seconds;
    for (const [unit, size] of UNITS) {
      if (rest >= size) {
        parts.push(`${Math.floor(rest / size)} ${unit}`);
        rest %= size;
      }
    }
    return parts.join(" ");
  }

  function tick() {
    const now = performance.now();
    for (const el of document.querySelectorAll("[data-countdown]")) {
      if (!el.dataset.seenAt) el.dataset.seenAt = String(now);
      const start = Number(el.dataset.secondsLeft || 0);
      const left = Math.max(0, Math.round(start - (now - Number(el.dataset.seenAt)) / 1000));
      const text = left > 0 ? `${words(left)} left` : "time is up: being taken back";
      if (el.textContent !== text) el.textContent = text;
      el.dataset.left = String(left);
    }
  }

  tick();
  setInterval(tick, 1000);
})();
