// Countersign live updates: one websocket per page; events carry ids and
// status only, and the page re-fetches what it shows through its own
// session, so it never displays more than this reviewer may see.
//
// Catching up: every event has a seq (its outbox row). The page is drawn with
// the newest seq of that moment (body[data-seq]); on every (re)connect it says
// "resume" from the last seq it knows and the server sends what it missed, or
// "resync" when it cannot tell, and then the page re-reads everything.
//
// Presence: a detail page says "watch" and hears "presence" with who else is
// looking (approvals/presence.py).
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

  // Runs fn `delay` ms after the first event that asks for it, however many more
  // ask meanwhile, and never sooner than `gap` ms after its last run: a burst of
  // events costs one fetch, a steady stream one fetch per `gap` (well within a second).
  function coalesce(fn, delay, gap) {
    let timer = null, running = false, again = false, last = 0;
    async function run() {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      last = Date.now();
      try { await fn(); } catch (e) { /* the next event or reconnect tries again */ }
      running = false;
      if (again) { again = false; schedule(); }
    }
    function schedule() {
      if (!timer) timer = setTimeout(run, Math.max(delay, last + gap - Date.now()));
    }
    return schedule;
  }

  async function freshDocument() {
    const { status, text } = await fetchText(window.location.href);
    if (status !== 200) return null;
    return new DOMParser().parseFromString(text, "text/html");
  }

  // Counts shown outside the part that is replaced (filter options, the heading).
  function syncCounts(doc) {
    for (const fresh of doc.querySelectorAll("[data-count-for]")) {
      const key = fresh.dataset.countFor;
      const current = document.querySelector(`[data-count-for="${CSS.escape(key)}"]`);
      if (current && current.textContent !== fresh.textContent) current.textContent = fresh.textContent;
    }
  }

  // --- queue: re-read the page as it is filtered, sorted and paged -------------------
  async function refreshQueue() {
    const doc = await freshDocument();
    const fresh = doc && doc.getElementById("queue-results");
    const current = document.getElementById("queue-results");
    if (!fresh || !current) return;
    if (current.hasAttribute("data-static")) return; // this view was too slow to read: not again per event
    const known = new Set([...current.querySelectorAll("tr[data-action-id]")].map((tr) => tr.dataset.actionId));
    const hadFocus = current.contains(document.activeElement);
    for (const tr of fresh.querySelectorAll("tr[data-action-id]")) {
      if (!known.has(tr.dataset.actionId)) tr.classList.add("arrived");
    }
    current.replaceWith(fresh);
    syncCounts(doc);
    document.dispatchEvent(new CustomEvent("countersign:queue-updated", { detail: { hadFocus } }));
  }

  async function reloadPart(selector) {
    const doc = await freshDocument();
    const fresh = doc && doc.querySelector(selector);
    const current = document.querySelector(selector);
    if (fresh && current) current.replaceWith(fresh);
  }

  // --- detail --------------------------------------------------------------
  async function updateDetail() {
    const panel = document.getElementById("live-panel");
    if (!panel) return;
    const { status, text } = await fetchText(body.dataset.liveUrl);
    if (status !== 200) return;
    const fresh = fragment(text);
    const active = document.activeElement;
    const typing = panel.contains(active) && active.matches("textarea, input");
    const drafted = [...panel.querySelectorAll("textarea")].some((t) => t.value !== t.defaultValue);
    const stillPending = fresh.querySelector(".status-card")?.dataset.status === "pending";
    if ((typing || drafted) && stillPending) {
      // Keep the reviewer's draft; refresh only what changed around it.
      for (const sel of [".status-card", ".timeline"]) {
        const a = panel.querySelector(sel), b = fresh.querySelector(sel);
        if (a && b) a.replaceWith(b);
      }
    } else {
      const hadFocus = panel.contains(active);
      panel.replaceChildren(fresh);
      if (hadFocus) document.getElementById("status-h")?.setAttribute("tabindex", "-1");
      if (hadFocus) document.getElementById("status-h")?.focus();
    }
    document.dispatchEvent(new CustomEvent("countersign:detail-updated"));
  }

  const refresh = {
    queue: coalesce(refreshQueue, 100, 600),
    history: coalesce(() => reloadPart("#history tbody"), 100, 600),
    dashboard: coalesce(() => reloadPart("#dashboard"), 200, 1500),
    detail: coalesce(updateDetail, 50, 300),
  };

  function onEvent(event) {
    if (page === "detail") {
      if (event.action_id === body.dataset.actionId) refresh.detail();
    } else if (refresh[page]) {
      refresh[page]();
    }
  }

  function catchUp() {
    if (refresh[page]) refresh[page]();
  }

  // --- presence ----------------------------------------------------------------
  function showPresence(viewers) {
    const box = document.getElementById("presence");
    if (!box) return;
    const names = document.getElementById("presence-names");
    const list = viewers.join(", ");
    if (box.dataset.viewers === list) return;
    box.dataset.viewers = list;
    names.textContent = list;
    box.hidden = viewers.length === 0;
    const status = document.getElementById("presence-status");
    if (status) status.textContent = viewers.length ? `Also looking at this action: ${list}` : "Nobody else is looking at this action.";
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
  let lastSeq = body.dataset.seq !== undefined && body.dataset.seq !== "" ? Number(body.dataset.seq) : null;
  const seen = new Set();
  let attempt = 0;
  let pinger = null;

  function heard(seq) {
    if (typeof seq !== "number") return true;
    if (seen.has(seq)) return false;
    seen.add(seq);
    if (seen.size > 1000) seen.delete(seen.values().next().value);
    if (lastSeq === null || seq > lastSeq) lastSeq = seq;
    return true;
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws/events/`);
    socket.addEventListener("open", () => {
      setState("live", "live");
      attempt = 0;
      // Whatever changed between drawing the page (or losing the socket) and now.
      if (lastSeq === null) catchUp();
      else socket.send(JSON.stringify({ type: "resume", since: lastSeq }));
      if (page === "detail" && body.dataset.actionId) {
        socket.send(JSON.stringify({ type: "watch", action_id: body.dataset.actionId }));
      }
      pinger = setInterval(() => socket.readyState === 1 && socket.send('{"type":"ping"}'), 25000);
      body.dataset.live = "1";
    });
    socket.addEventListener("message", (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (data.type === "action") { if (heard(data.seq)) onEvent(data); }
      else if (data.type === "resync") catchUp();
      else if (data.type === "presence" && data.action_id === body.dataset.actionId) showPresence(data.viewers || []);
    });
    socket.addEventListener("close", () => {
      clearInterval(pinger);
      body.dataset.live = "0";
      showPresence([]);
      setState("down", "reconnecting…");
      attempt += 1;
      setTimeout(connect, Math.min(10000, 250 * 2 ** attempt));
    });
  }
  connect();
})();
