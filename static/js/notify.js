// Countersign in-browser notifications (issue 20): new proposals in your groups.
//
// static/js/live.js hears every event of the actions this reviewer may see (the server sends only those) and
// passes each on as a "countersign:action" DOM event. A new proposal (pending, no approvals, not a claim, an id
// not seen before) while this tab is not looked at adds one to a count in the tab title, "(3) Queue ·
// Countersign", cleared when the reviewer comes back. With the reviewer's opt-in (the bell button, which asks
// the browser's permission; remembered in localStorage) each one is also a system notification (the
// Notification API) that opens the action when clicked. The text comes from the action's own queue row, read
// through the reviewer's session like any other page.
(function () {
  "use strict";
  const who = document.querySelector(".topbar .who");
  if (!who) return; // logged out
  const KEY = "countersign.notify";
  const baseTitle = document.title;
  const known = new Set([...document.querySelectorAll("tr[data-action-id]")].map((tr) => tr.dataset.actionId));
  let unseen = 0;

  const supported = "Notification" in window;
  const wanted = () => supported && Notification.permission === "granted" && localStorage.getItem(KEY) === "1";

  // --- the opt-in button -------------------------------------------------------------------
  let button = null;
  if (supported) {
    button = document.createElement("button");
    button.type = "button";
    button.className = "link notify-button";
    button.id = "notify-button";
    who.prepend(button);
    button.addEventListener("click", async () => {
      if (wanted()) {
        localStorage.setItem(KEY, "0");
      } else if (Notification.permission !== "denied") {
        const answer = await Notification.requestPermission();
        localStorage.setItem(KEY, answer === "granted" ? "1" : "0");
      }
      drawButton();
    });
    drawButton();
  }

  function drawButton() {
    if (!button) return;
    const on = wanted();
    const blocked = Notification.permission === "denied";
    button.textContent = on ? "Notifications on" : blocked ? "Notifications blocked" : "Notify me";
    button.setAttribute("aria-pressed", String(on));
    button.disabled = blocked;
    button.title = blocked
      ? "Your browser blocks notifications for this site: allow them in its site settings."
      : on
        ? "You are notified of new proposals in your groups. Click to stop."
        : "Be notified of new proposals in your groups, even in another tab.";
  }

  // --- the count in the tab title ----------------------------------------------------------
  const away = () => document.visibilityState !== "visible" || !document.hasFocus();

  function drawTitle() {
    document.title = unseen ? `(${unseen}) ${baseTitle}` : baseTitle;
  }

  function back() {
    if (away() || !unseen) return;
    unseen = 0;
    drawTitle();
  }
  window.addEventListener("focus", back);
  document.addEventListener("visibilitychange", back);

  // --- new proposals -----------------------------------------------------------------------
  async function summaryOf(actionId) {
    try {
      const response = await fetch(`/actions/${encodeURIComponent(actionId)}/row`, {
        headers: { "X-Requested-With": "fetch" },
        credentials: "same-origin",
      });
      if (response.status !== 200) return "";
      const doc = new DOMParser().parseFromString(`<table>${await response.text()}</table>`, "text/html");
      return doc.querySelector(".summary a")?.textContent.trim() || "";
    } catch (e) {
      return "";
    }
  }

  async function announce(actionId) {
    const summary = await summaryOf(actionId);
    const note = new Notification("New proposal to review", {
      body: summary || "A new action is waiting in your queue.",
      tag: `countersign-${actionId}`,
    });
    note.addEventListener("click", () => {
      window.focus();
      window.location.assign(`/actions/${encodeURIComponent(actionId)}`);
    });
  }

  document.addEventListener("countersign:action", (e) => {
    const event = e.detail || {};
    const id = event.action_id;
    if (!id || known.has(id)) return;
    known.add(id);
    const isNew = event.status === "pending" && event.approvals === 0 && !event.kind && !event.replayed;
    if (!isNew) return;
    if (away()) {
      unseen += 1;
      drawTitle();
    }
    if (wanted()) announce(id);
  });
})();
