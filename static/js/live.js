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
// looking (approvals/presence.py); the queue says "observe" with its rows' ids
// and shows who is looking on each row.
//
// Honest state (issue 20): the indicator says "live" only while the socket is
// open, the browser online and the server answering. Down or offline shows a
// banner (#live-banner) and the page re-reads what it shows every few seconds
// until the socket is back ("live again"). An idle socket pings every 0.6 s and
// one unanswered for 1.2 s counts as down: a dead socket shows within 2 s.
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
    // An edit section the reviewer opened is their work too, typed into or not (a redraw would close it).
    const drafted = [...panel.querySelectorAll("textarea")].some((t) => t.value !== t.defaultValue)
      || Boolean(panel.querySelector("#edits[open]"));
    const stillPending = fresh.querySelector(".status-card")?.dataset.status === "pending";
    if (typing || drafted) {
      // Keep the reviewer's draft (never replace a form with unsent input); refresh what changed around it.
      for (const sel of [".status-card", ".timeline", ".claim-card"]) {
        const a = panel.querySelector(sel), b = fresh.querySelector(sel);
        if (a && b) a.replaceWith(b);
        else if (a && !b) a.remove();
      }
      if (!stillPending) keptDraftNotice(panel, fresh.querySelector("#decided-by"));
    } else {
      const hadFocus = panel.contains(active);
      panel.replaceChildren(fresh);
      if (hadFocus) document.getElementById("status-h")?.setAttribute("tabindex", "-1");
      if (hadFocus) document.getElementById("status-h")?.focus();
    }
    document.dispatchEvent(new CustomEvent("countersign:detail-updated"));
  }

  // Someone else decided while this reviewer was typing: say who, what and when, and keep their text.
  function keptDraftNotice(panel, decided) {
    let notice = document.getElementById("draft-kept");
    if (!notice) {
      notice = document.createElement("p");
      notice.id = "draft-kept";
      notice.className = "notice warn draft-kept";
      notice.setAttribute("role", "alert");
      // Beside the draft, where the reviewer is looking.
      const decide = panel.querySelector(".decide h2");
      if (decide) decide.after(notice);
      else panel.prepend(notice);
    }
    const who = decided?.dataset.by || "Someone else";
    const outcome = decided?.dataset.outcome || "decided";
    const at = decided?.dataset.at ? new Date(decided.dataset.at) : null;
    const when = at ? ` at ${at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" })}` : "";
    notice.textContent = outcome === "expired"
      ? `This action expired${when} — your draft is kept.`
      : `${who} ${outcome} this${when} — your draft is kept.`;
    // The draft cannot be sent any more; it stays to be copied.
    for (const button of panel.querySelectorAll(".decide button[type=submit]")) button.disabled = true;
  }

  const refresh = {
    queue: coalesce(refreshQueue, 100, 600),
    history: coalesce(() => reloadPart("#history tbody"), 100, 600),
    dashboard: coalesce(() => reloadPart("#dashboard"), 200, 1500),
    access: coalesce(() => reloadPart("#access-rows"), 200, 1500),  // Active access (issue 23); access.js counts down
    detail: coalesce(updateDetail, 50, 300),
  };

  function onEvent(event) {
    // For static/js/notify.js (in-browser notifications, the count in the tab title).
    document.dispatchEvent(new CustomEvent("countersign:action", { detail: event }));
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
  const rowViewers = new Map(); // action id -> names, from the presence the queue observes

  function showRowViewers(actionId, viewers) {
    if (viewers.length) rowViewers.set(actionId, viewers.join(", "));
    else rowViewers.delete(actionId);
    const tr = document.querySelector(`tr[data-action-id="${CSS.escape(actionId)}"]`);
    const box = tr && tr.querySelector(".row-viewers");
    if (!box) return;
    const list = rowViewers.get(actionId) || "";
    box.querySelector(".row-viewer-names").textContent = list;
    box.hidden = !list;
  }

  function observeRows() {
    if (page !== "queue" || !socket || socket.readyState !== 1) return;
    const ids = [...document.querySelectorAll("#queue-results tr[data-action-id]")].map((tr) => tr.dataset.actionId);
    socket.send(JSON.stringify({ type: "observe", action_ids: ids }));
    for (const [id, names] of rowViewers) showRowViewers(id, names.split(", "));
  }
  document.addEventListener("countersign:queue-updated", observeRows);

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
  let socket = null;

  // --- honest state: banner, ping, polling --------------------------------------------
  // Idle: a ping after 0.4 s of silence, down after 1 s unanswered: said within 2 s, with room for a slow pong.
  const PING_EVERY = 400, PONG_WITHIN = 1000, POLL_EVERY = 3000;
  const banner = document.getElementById("live-banner");
  let heardAt = Date.now(), pingedAt = 0, poller = null, wasDown = false, againTimer = null, retry = null;

  function showBanner(kind, text) {
    if (!banner) return;
    clearTimeout(againTimer);
    banner.dataset.state = kind;
    banner.querySelector(".live-banner-text").textContent = text;
    banner.hidden = false;
  }

  function down(reason) {
    body.dataset.live = "0";
    const offline = !navigator.onLine;
    setState("down", offline ? "offline" : "reconnecting…");
    showBanner("down", offline
      ? "You are offline. What you see may be out of date; it is re-read as soon as you are back."
      : `Live updates are down (${reason}). This page re-reads itself every few seconds until they are back.`);
    wasDown = true;
    if (!poller) poller = setInterval(() => { catchUp(); if (page === "queue") observeRows(); }, POLL_EVERY);
  }

  function up() {
    clearInterval(poller);
    poller = null;
    setState("live", "live");
    body.dataset.live = "1";
    if (wasDown) {
      wasDown = false;
      showBanner("again", "Live again: this page is up to date.");
      againTimer = setTimeout(() => { if (banner) banner.hidden = true; }, 3000);
    }
  }

  // Down now, not when the browser notices the dead connection (that can take minutes); then reconnect.
  function drop(s, reason) {
    if (s !== socket) return;
    socket = null;
    clearInterval(pinger);
    showPresence([]);
    down(reason);
    try { s.close(); } catch (e) { /* already closing */ }
    attempt += 1;
    clearTimeout(retry);
    retry = setTimeout(connect, Math.min(5000, 250 * 2 ** attempt));  // polling covers the wait
  }

  window.addEventListener("offline", () => { if (socket) drop(socket, "offline"); else down("offline"); });
  window.addEventListener("online", () => {
    // Try at once rather than at the end of the back-off.
    attempt = 0;
    if (!socket) { clearTimeout(retry); connect(); }
  });

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
    const current = new WebSocket(`${scheme}://${window.location.host}/ws/events/`);
    socket = current;
    current.addEventListener("open", () => {
      if (!navigator.onLine) { drop(current, "offline"); return; }
      // Live once the server answers (the first pong or event), not when the socket merely opens.
      heardAt = 0;
      pingedAt = Date.now();
      current.send('{"type":"ping"}');
      // Whatever changed between drawing the page (or losing the socket) and now.
      if (lastSeq === null) catchUp();
      else current.send(JSON.stringify({ type: "resume", since: lastSeq }));
      if (page === "detail" && body.dataset.actionId) {
        current.send(JSON.stringify({ type: "watch", action_id: body.dataset.actionId }));
      }
      if (page === "queue") observeRows();
      clearInterval(pinger);
      pinger = setInterval(() => {
        if (current.readyState !== 1 || current !== socket) return;
        const now = Date.now();
        if (pingedAt > heardAt && now - pingedAt > PONG_WITHIN) { drop(current, "no answer from the server"); return; }
        if (now - heardAt >= PING_EVERY && pingedAt <= heardAt) {
          pingedAt = now;
          current.send('{"type":"ping"}');
        }
      }, 100);
    });
    current.addEventListener("message", (message) => {
      if (current !== socket) return;
      heardAt = Date.now();
      if (body.dataset.live !== "1") { attempt = 0; up(); }
      let data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (data.type === "action") { if (heard(data.seq)) onEvent(data); }
      else if (data.type === "resync") catchUp();
      else if (data.type === "presence" && page === "queue") showRowViewers(data.action_id, data.viewers || []);
      else if (data.type === "presence" && data.action_id === body.dataset.actionId) showPresence(data.viewers || []);
    });
    current.addEventListener("close", () => drop(current, "the connection closed"));
  }
  connect();
})();
