// Countersign live updates: one websocket per page; events carry ids and
// status only, and the page re-fetches the fragment it shows through its own
// session, so it never displays more than this reviewer may see.
(function () {
  "use strict";
  const body = document.body;
  const page = body.dataset.page;
  const indicator = document.getElementById("live-indicator");
  if (!indicator) return; // logged out

  function setState(state, text) {
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  async function fetchText(url) {
    const response = await fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
    return { status: response.status, text: response.status === 200 ? await response.text() : "" };
  }

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content;
  }

  // --- queue ---------------------------------------------------------------
  function refreshQueueChrome() {
    const rows = document.querySelectorAll("#queue-body tr");
    const count = document.getElementById("queue-count");
    if (count) count.textContent = rows.length;
    const empty = document.getElementById("queue-empty");
    if (empty) empty.hidden = rows.length > 0;
  }

  async function updateQueueRow(actionId) {
    const { status, text } = await fetchText(`/actions/${actionId}/row`);
    const existing = document.getElementById(`action-${actionId}`);
    if (status === 200) {
      const row = fragment(text).firstElementChild;
      if (existing) existing.replaceWith(row);
      else {
        row.classList.add("arrived");
        document.getElementById("queue-body").prepend(row);
      }
    } else if (existing) {
      existing.remove();
    }
    refreshQueueChrome();
  }

  async function reloadPart(selector) {
    const { status, text } = await fetchText(window.location.href);
    if (status !== 200) return;
    const doc = new DOMParser().parseFromString(text, "text/html");
    const fresh = doc.querySelector(selector);
    const current = document.querySelector(selector);
    if (fresh && current) current.replaceWith(fresh);
    refreshQueueChrome();
  }

  // --- detail --------------------------------------------------------------
  async function updateDetail() {
    const panel = document.getElementById("live-panel");
    if (!panel) return;
    const { status, text } = await fetchText(body.dataset.liveUrl);
    if (status !== 200) return;
    const fresh = fragment(text);
    const typing = panel.contains(document.activeElement) && document.activeElement.matches("textarea, input");
    const stillPending = fresh.querySelector(".status-card")?.dataset.status === "pending";
    if (typing && stillPending) {
      // Keep the reviewer's draft; refresh only what changed around it.
      for (const sel of [".status-card"]) {
        const a = panel.querySelector(sel), b = fresh.querySelector(sel);
        if (a && b) a.replaceWith(b);
      }
    } else {
      panel.replaceChildren(fresh);
    }
  }

  let historyTimer = null;
  function onEvent(event) {
    if (page === "queue") updateQueueRow(event.action_id);
    else if (page === "detail" && event.action_id === body.dataset.actionId) updateDetail();
    else if (page === "history") {
      clearTimeout(historyTimer);
      historyTimer = setTimeout(() => reloadPart("#history tbody"), 150);
    }
  }

  function catchUp() {
    if (page === "queue") reloadPart("#queue-body");
    else if (page === "detail") updateDetail();
    else if (page === "history") reloadPart("#history tbody");
  }

  // --- previews ----------------------------------------------------------------
  // The approve form sends back the fingerprint of the preview on screen (not of a newer one),
  // so the server can refuse when the target changed since the reviewer looked.
  document.addEventListener("submit", (e) => {
    const form = e.target.closest(".approve-form");
    const preview = document.getElementById("preview");
    if (form && preview && form.elements.preview_fingerprint) {
      form.elements.preview_fingerprint.value = preview.dataset.fingerprint;
    }
  });
  document.addEventListener("click", (e) => {
    const button = e.target.closest(".diff-view-btn");
    if (!button) return;
    const diff = button.closest(".diff");
    diff.dataset.view = button.dataset.view;
    for (const b of diff.querySelectorAll(".diff-view-btn")) b.setAttribute("aria-pressed", String(b === button));
  });

  // --- connection ------------------------------------------------------------
  let attempt = 0;
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws/events/`);
    socket.addEventListener("open", () => {
      setState("live", "live");
      // Whatever changed between rendering the page (or losing the socket) and now.
      catchUp();
      attempt = 0;
      body.dataset.live = "1";
    });
    socket.addEventListener("message", (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (data.type === "action") onEvent(data);
    });
    socket.addEventListener("close", () => {
      body.dataset.live = "0";
      setState("down", "reconnecting…");
      attempt += 1;
      setTimeout(connect, Math.min(10000, 250 * 2 ** attempt));
    });
  }
  connect();
  window.setInterval(() => {
    for (const el of document.querySelectorAll("time.expiry")) {
      const ms = new Date(el.getAttribute("datetime")) - new Date();
      if (ms <= 0) el.textContent = "expiring";
    }
  }, 15000);
})();
