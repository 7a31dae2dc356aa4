// Triage mode on the queue (?mode=triage): the selected action's detail beside the list, decided without
// leaving the page, so the filters, the sort and the position in the list survive every decision.
//
//   j / k  next / previous (desk.js)     a  approve, then the next action (high and critical: typed confirmation)
//   r  write the reason; Enter rejects    u  undo the last approval while its window lasts
//   x  select a low-risk action for a bulk decision (one action type at a time)
//
// The server is the guarantee: an approval's execution waits out the undo window (approvals.services.undo),
// and every decision, bulk or not, goes through the services one action at a time.
(function () {
  "use strict";
  const pane = document.getElementById("triage-pane");
  if (!pane) return;
  const desk = document.querySelector(".desk");
  desk?.classList.add("triage");
  const detail = document.getElementById("triage-detail");
  const toastBox = document.getElementById("triage-toast");
  const toastText = document.getElementById("triage-toast-text");
  const undoButton = document.getElementById("triage-undo");
  const undoLeft = document.getElementById("triage-undo-left");
  const confirmDialog = document.getElementById("triage-confirm");
  const confirmWord = document.getElementById("triage-confirm-word");
  const confirmYes = document.getElementById("triage-confirm-yes");
  const bulkBox = document.getElementById("triage-bulk");
  const PLACEHOLDER = "00000000-0000-0000-0000-000000000000";
  const WORD = "approve";

  const csrf = () => document.querySelector("#triage-bulk-form input[name=csrfmiddlewaretoken]")?.value || "";
  const rows = () => [...document.querySelectorAll("#queue-body tr[data-action-id]")];
  const actionUrl = (id, suffix) => pane.dataset.paneUrl.replace(PLACEHOLDER, id).replace(/\/triage$/, suffix);
  const typeOf = (row) => (row.querySelector(".sub")?.textContent || "").split("·")[0].trim();
  const summaryOf = (row) => row.querySelector("td.summary a")?.textContent.trim() || "";

  let currentId = null;
  let loadSeq = 0;
  const picked = new Map(); // action id -> action type

  // --- keep the mode across the filter form, the sort links and the pages ---------------------------
  function keepMode() {
    const form = document.getElementById("queue-filters");
    if (form && !form.querySelector("input[name=mode]")) {
      form.append(Object.assign(document.createElement("input"), { type: "hidden", name: "mode", value: "triage" }));
    }
    for (const a of document.querySelectorAll("#queue-results a.sort-link, #queue-results .pager a, #clear-filters")) {
      const url = new URL(a.getAttribute("href"), window.location.href);
      url.searchParams.set("mode", "triage");
      a.setAttribute("href", url.pathname + url.search);
    }
  }

  // --- the pane follows the selection ---------------------------------------------------------------------
  const rowOf = (id) => rows().find((tr) => tr.dataset.actionId === id) || null;
  const currentRow = () => rowOf(currentId);

  function focusRow(index) {
    const all = rows();
    if (!all.length) {
      currentId = null;
      detail.replaceChildren(Object.assign(document.createElement("p"), { className: "muted", id: "triage-empty", textContent: "Nothing left in this view." }));
      return;
    }
    const row = all[Math.max(0, Math.min(all.length - 1, index))];
    row.querySelector("td.summary a")?.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
    show(row);
  }

  async function show(row) {
    const id = row.dataset.actionId;
    if (id === currentId && detail.querySelector(`.triage-action[data-action-id="${CSS.escape(id)}"]`)) return;
    currentId = id;
    const mine = ++loadSeq;
    detail.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(actionUrl(id, "/triage"), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } });
      const html = await response.text();
      if (mine !== loadSeq) return; // the reviewer moved on meanwhile
      const template = document.createElement("template");
      template.innerHTML = response.ok ? html : `<p class="error-text">Could not load this action (${response.status}).</p>`;
      detail.replaceChildren(template.content);
    } catch (err) {
      if (mine === loadSeq) detail.replaceChildren(Object.assign(document.createElement("p"), { className: "error-text", textContent: "Could not load this action; check your connection." }));
    } finally {
      if (mine === loadSeq) detail.removeAttribute("aria-busy");
    }
  }

  document.addEventListener("focusin", (e) => {
    const row = e.target.closest && e.target.closest("#queue-body tr[data-action-id]");
    if (row) show(row);
  });

  // --- the toast, and undo ------------------------------------------------------------------------------------
  let undoState = null; // { urls, ids, until, index }
  let toastTimer = null;

  function toast(message, { error = false, undo = null } = {}) {
    clearInterval(toastTimer);
    toastText.textContent = message;
    toastBox.classList.toggle("error", error);
    toastBox.hidden = false;
    undoState = undo;
    undoButton.hidden = !undo;
    if (undo) {
      const tick = () => {
        const left = Math.ceil((undo.until - Date.now()) / 1000);
        if (left <= 0) {
          clearInterval(toastTimer);
          undoState = null;
          undoButton.hidden = true;
          toastText.textContent = `${message} Sent for execution.`;
          toastTimer = setTimeout(() => { toastBox.hidden = true; }, 3000);
          return;
        }
        undoLeft.textContent = `(${left} s)`;
      };
      tick();
      toastTimer = setInterval(tick, 250);
    }
  }

  async function post(url, fields) {
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(fields)) for (const one of [].concat(v)) body.append(k, one);
    try {
      const response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrf(), "X-Requested-With": "fetch" },
        body,
      });
      return await response.json().catch(() => ({ ok: false, message: `The server answered ${response.status}.` }));
    } catch (err) {
      return { ok: false, message: "Could not reach the server; nothing was decided." };
    }
  }

  async function undo() {
    const state = undoState;
    if (!state) return false;
    undoState = null;
    clearInterval(toastTimer);
    undoButton.hidden = true;
    const answers = await Promise.all(state.urls.map((url) => post(url, {})));
    const failed = answers.filter((a) => !a.ok);
    if (failed.length) { toast(failed[0].message, { error: true }); return true; }
    toast(state.ids.length > 1 ? `${state.ids.length} approvals undone; back in the queue.` : "Approval undone; back in the queue.");
    // Put the action back where it was and select it, without waiting for the live update.
    for (const id of state.ids.slice().reverse()) {
      if (rows().some((tr) => tr.dataset.actionId === id)) continue;
      try {
        const response = await fetch(actionUrl(id, "/row"), { credentials: "same-origin" });
        if (response.status !== 200) continue;
        const template = document.createElement("template");
        template.innerHTML = (await response.text()).trim();
        const tr = template.content.querySelector("tr");
        const all = rows();
        const before = all[state.index];
        if (before) before.before(tr); else document.getElementById("queue-body")?.append(tr);
      } catch (err) { /* the live update brings it back */ }
    }
    decorate();
    currentId = null;
    const index = rows().findIndex((tr) => tr.dataset.actionId === state.ids[0]);
    focusRow(index >= 0 ? index : state.index);
    return true;
  }
  undoButton.addEventListener("click", undo);

  // --- deciding ---------------------------------------------------------------------------------------------
  function afterDecision(ids, index, answer, message) {
    for (const id of ids) {
      picked.delete(id);
      const tr = rows().find((r) => r.dataset.actionId === id);
      // Still pending (an approval of two): it stays in the list for others, and the selection moves past it.
      if (tr && answer.status !== "pending") tr.remove();
      else if (tr) index += 1;
    }
    updateBulk();
    currentId = null;
    focusRow(index);
    if (answer.undo_until) {
      const urls = answer.undo ? answer.undo.map((u) => u.undo_url) : [answer.undo_url];
      const undoIds = answer.undo ? answer.undo.map((u) => u.id) : ids;
      toast(message, { undo: { urls, ids: undoIds, until: new Date(answer.undo_until).getTime(), index: index } });
    } else {
      toast(message);
    }
  }

  async function decide(row, verdict, fields) {
    const id = row.dataset.actionId;
    const index = rows().indexOf(row);
    const shown = detail.querySelector(".triage-action");
    if (verdict === "approve" && shown && shown.dataset.actionId === id && shown.dataset.fingerprint) {
      fields.preview_fingerprint = shown.dataset.fingerprint; // what the reviewer saw: a changed target refuses
    }
    const answer = await post(actionUrl(id, `/triage/${verdict}`), fields);
    if (!answer.ok) {
      toast(answer.message || "Refused.", { error: true });
      currentId = null;
      show(row);
      return;
    }
    const label = verdict === "approve" ? (answer.status === "pending" ? "Approval recorded" : "Approved") : "Rejected";
    afterDecision([id], index, answer, `${label}: “${summaryOf(row)}”.`);
  }

  function approveCurrent() {
    const row = currentRow();
    if (!row) return false;
    if (row.dataset.risk === "high" || row.dataset.risk === "critical") {
      openConfirm(row);
      return true;
    }
    decide(row, "approve", {});
    return true;
  }

  async function rejectCurrent() {
    const row = currentRow();
    const reason = document.getElementById("triage-reason");
    if (!row || !reason) return;
    if (!reason.value.trim()) { toast("A rejection needs a reason: say why, so the agent can adapt.", { error: true }); return; }
    await decide(row, "reject", { reason: reason.value });
  }

  // High and critical: focus starts on Cancel, and only the typed word enables "Yes, approve".
  // The dialog holds the action's id, not its row: a live redraw (live.js) may replace the rows while it is open.
  let confirming = null;
  function openConfirm(row) {
    if (!confirmDialog || typeof confirmDialog.showModal !== "function") return;
    confirming = row.dataset.actionId;
    document.getElementById("triage-confirm-risk").textContent = row.dataset.risk;
    document.getElementById("triage-confirm-summary").textContent = summaryOf(row);
    confirmWord.value = "";
    confirmYes.disabled = true;
    confirmDialog.returnValue = "";
    confirmDialog.showModal();
    document.getElementById("triage-confirm-cancel").focus();
  }
  const wordTyped = () => confirmWord.value.trim().toLowerCase() === WORD;
  confirmWord?.addEventListener("input", () => { confirmYes.disabled = !wordTyped(); });
  // Typing a letter anywhere in the dialog types it into the box (focus stays on Cancel until then).
  confirmDialog?.addEventListener("keydown", (e) => {
    if (e.key.length === 1 && e.key !== " " && !e.ctrlKey && !e.metaKey && !e.altKey && e.target !== confirmWord) confirmWord.focus();
  });
  confirmWord?.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault(); // Enter never confirms by itself: only with the word typed
    if (wordTyped()) confirmDialog.close("confirm");
  });
  confirmDialog?.addEventListener("close", () => {
    if (confirmDialog.open) return; // a late close event of an earlier round: the dialog asks again now
    const id = confirming;
    confirming = null;
    if (!id) return;
    const row = rowOf(id); // gone when someone else decided it while the dialog was open
    if (confirmDialog.returnValue === "confirm" && wordTyped()) {
      // The word confirms this action only: never the one the selection moved to when its row went away.
      if (row) { decide(row, "approve", { confirm: confirmWord.value.trim() }); return; }
      toast("Someone else decided that action while you were confirming: nothing was approved.", { error: true });
    }
    // Focus leaves the closed dialog even when its row was redrawn (the browser restores focus only to the old,
    // detached link, and keys typed meanwhile would go to the hidden box).
    (row || currentRow())?.querySelector("td.summary a")?.focus();
  });

  // --- bulk: low-risk actions of one type -------------------------------------------------------------------
  function decorate() {
    keepMode();
    for (const row of rows()) {
      const id = row.dataset.actionId;
      row.classList.toggle("picked", picked.has(id));
      if (row.dataset.risk !== "low" || row.querySelector("input.triage-pick")) continue;
      const box = Object.assign(document.createElement("input"), { type: "checkbox", className: "triage-pick", checked: picked.has(id) });
      box.setAttribute("aria-label", `Select “${summaryOf(row)}” for a bulk decision`);
      box.addEventListener("change", () => pick(row, box.checked));
      row.querySelector("td.summary")?.prepend(box);
    }
  }

  function pick(row, on) {
    const id = row.dataset.actionId;
    if (row.dataset.risk !== "low") { toast("Only low-risk actions are decided in bulk.", { error: true }); return; }
    const type = typeOf(row);
    if (on && picked.size && [...picked.values()].some((t) => t !== type)) {
      toast(`Bulk decisions take one action type at a time (${[...picked.values()][0]} is selected).`, { error: true });
      on = false;
    }
    if (on) picked.set(id, type); else picked.delete(id);
    const box = row.querySelector("input.triage-pick");
    if (box) box.checked = on;
    row.classList.toggle("picked", on);
    updateBulk();
  }

  function updateBulk() {
    for (const id of [...picked.keys()]) if (!rows().some((tr) => tr.dataset.actionId === id)) picked.delete(id);
    bulkBox.hidden = picked.size === 0;
    document.getElementById("triage-bulk-count").textContent = `${picked.size} selected`;
    document.getElementById("triage-bulk-type").textContent = picked.size ? `low risk · ${[...picked.values()][0]}` : "";
  }

  async function bulk(verdict) {
    const ids = [...picked.keys()];
    if (!ids.length) return;
    const reason = document.getElementById("triage-bulk-reason").value;
    const answer = await post(pane.dataset.bulkUrl, { ids, verdict, reason });
    if (!answer.results) { toast(answer.message || "Refused.", { error: true }); return; }
    const done = answer.results.filter((r) => r.ok).map((r) => r.action_id);
    const refused = answer.results.filter((r) => !r.ok);
    const first = Math.min(...done.map((id) => rows().findIndex((tr) => tr.dataset.actionId === id)).filter((i) => i >= 0), rows().length);
    const verb = verdict === "approve" ? "approved" : "rejected";
    let message = `${done.length} ${verb}.`;
    if (refused.length) message += ` ${refused.length} refused: ${refused[0].message}`;
    afterDecision(done, first, { ...answer, status: verdict === "approve" ? "approved" : "rejected" }, message);
    if (refused.length && !answer.undo_until) toastBox.classList.add("error");
  }
  document.getElementById("triage-bulk-approve")?.addEventListener("click", () => bulk("approve"));
  document.getElementById("triage-bulk-reject")?.addEventListener("click", () => bulk("reject"));
  document.getElementById("triage-bulk-clear")?.addEventListener("click", () => {
    for (const row of rows()) if (picked.has(row.dataset.actionId)) pick(row, false);
  });

  // --- the pane's own buttons, and the keys ----------------------------------------------------------------
  detail.addEventListener("click", (e) => {
    if (e.target.closest && e.target.closest("#triage-approve")) approveCurrent();
  });

  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    if (document.querySelector("dialog[open]")) return;
    if (e.target.id === "triage-reason") {
      if (e.key === "Enter") { e.preventDefault(); rejectCurrent(); }
      else if (e.key === "Escape") { e.preventDefault(); currentRow()?.querySelector("td.summary a")?.focus(); }
      return;
    }
    if (e.target instanceof Element && e.target.closest("input:not(.triage-pick), textarea, select, [contenteditable]")) return;
    const key = e.key;
    if (key === "a") { if (approveCurrent()) e.preventDefault(); }
    else if (key === "r") {
      const reason = document.getElementById("triage-reason");
      if (reason && currentRow()) { e.preventDefault(); reason.focus(); }
    } else if (key === "u") { if (undoState) { e.preventDefault(); undo(); } }
    else if (key === "x") {
      const row = currentRow();
      if (row) { e.preventDefault(); pick(row, !picked.has(row.dataset.actionId)); }
    } else if (key === "e") { e.preventDefault(); } // editing happens on the full page (Enter)
  }, true); // before desk.js, which would open the full page for a / r / e

  // The live queue was redrawn (live.js): desk.js keeps the selection (or its neighbour, when someone else
  // decided it), which moves the pane through focusin; the checkboxes and the mode's links are drawn again.
  document.addEventListener("countersign:queue-updated", () => {
    decorate();
    updateBulk();
  });

  decorate();
  focusRow(0);
})();
