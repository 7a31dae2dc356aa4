// Countersign's reviewer desk: keyboard shortcuts, the high-risk confirmation
// (edited parameters: static/js/edit_form.js), filters that apply themselves, and
// deadlines that count down. Everything here has a mouse and no-JavaScript
// equivalent in the page; this only makes it faster.
//
//   queue:  j / k  next / previous action     Enter  open it
//           a / r / e  open it to approve / reject / edit
//           /  search
//   detail: a  approve (asks first when the risk is high or critical)
//           r  write the reason for rejecting     e  edit the parameters
//           u  back to the queue     Ctrl+Enter in a text box sends its form
//   any:    ?  these shortcuts
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  const body = document.body;
  const page = body.dataset.page;

  function typingIn(target) {
    return target instanceof Element && !!target.closest("input, textarea, select, [contenteditable], [contenteditable='true']");
  }

  function openDialog() {
    return document.querySelector("dialog[open]");
  }

  // --- queue selection -------------------------------------------------------------
  let selectedId = null;
  let selectedIndex = -1;

  function rows() {
    return [...document.querySelectorAll("#queue-body tr[data-action-id]")];
  }

  function select(index, { focus = true } = {}) {
    const all = rows();
    if (!all.length) { selectedId = null; selectedIndex = -1; return null; }
    index = Math.max(0, Math.min(all.length - 1, index));
    for (const tr of all) tr.classList.remove("selected");
    const row = all[index];
    row.classList.add("selected"); // focus is on its link, which is what a screen reader announces
    selectedId = row.dataset.actionId;
    selectedIndex = index;
    if (focus) {
      const link = row.querySelector("td.summary a");
      if (link) link.focus({ preventScroll: true });
      row.scrollIntoView({ block: "nearest" });
    }
    return row;
  }

  function currentIndex() {
    const all = rows();
    const focused = document.activeElement && document.activeElement.closest("#queue-body tr[data-action-id]");
    if (focused) return all.indexOf(focused);
    if (selectedId) {
      const i = all.findIndex((tr) => tr.dataset.actionId === selectedId);
      if (i >= 0) return i;
    }
    return -1;
  }

  function selectedRow() {
    const i = currentIndex();
    return i >= 0 ? rows()[i] : null;
  }

  // Keep the selection when the live queue is redrawn (live.js).
  document.addEventListener("countersign:queue-updated", (e) => {
    if (selectedId === null) return;
    const all = rows();
    let i = all.findIndex((tr) => tr.dataset.actionId === selectedId);
    if (i < 0) i = Math.min(selectedIndex, all.length - 1); // it left: its neighbour takes its place
    if (i >= 0) select(i, { focus: e.detail && e.detail.hadFocus });
    else { selectedId = null; selectedIndex = -1; }
  });

  // Track focus moved by Tab or the mouse too.
  document.addEventListener("focusin", (e) => {
    const row = e.target.closest && e.target.closest("#queue-body tr[data-action-id]");
    if (row) select(rows().indexOf(row), { focus: false });
  });

  function openRow(row, intent) {
    if (!row) return;
    window.location.assign(row.dataset.href + (intent ? `#${intent}` : ""));
  }

  // --- detail: deciding -----------------------------------------------------------------
  function approveForm() { return document.querySelector("#live-panel .approve-form"); }
  function rejectReason() { return document.getElementById("reject-reason"); }

  function startEdits() {
    const details = document.getElementById("edits");
    const params = document.getElementById("approve-params");
    if (!details || !params) return false;
    details.open = true;
    // The form of static/js/edit_form.js when it is drawn, else the raw JSON.
    if (!(window.countersignEditFocus && window.countersignEditFocus())) params.focus();
    return true;
  }

  function focusReject() {
    const reason = rejectReason();
    if (!reason) return false;
    reason.scrollIntoView({ block: "center" });
    reason.focus();
    return true;
  }

  const confirmDialog = document.getElementById("confirm-approve");
  let pendingSubmitter = null;

  // Approve: straight away, or after the dialog for high and critical risk.
  function approve(submitter) {
    const form = approveForm();
    if (!form) return false;
    const button = submitter || form.querySelector("button.approve");
    if (button && button.disabled) {
      startEdits(); // the edited parameters would be refused: the errors are shown there
      return true;
    }
    if (form.dataset.confirm && confirmDialog && typeof confirmDialog.showModal === "function") {
      pendingSubmitter = button;
      confirmDialog.returnValue = "";
      resetConfirmWord();
      confirmDialog.showModal();
      // Focus starts on Cancel: `a` then Enter must never approve a risky action.
      document.getElementById("confirm-approve-cancel")?.focus();
      return true;
    }
    form.requestSubmit(button);
    return true;
  }

  // The confirmation asks for the word "approve" typed: "Yes, approve" stays disabled until then, and Enter in
  // the box confirms only with the word there.
  const CONFIRM_WORD = "approve";
  function confirmWordBox() {
    let box = document.getElementById("confirm-approve-word");
    if (!box && confirmDialog) {
      const buttons = confirmDialog.querySelector(".dialog-buttons");
      const label = Object.assign(document.createElement("label"), { htmlFor: "confirm-approve-word" });
      label.append("Type ", Object.assign(document.createElement("strong"), { textContent: CONFIRM_WORD }), " to confirm");
      box = Object.assign(document.createElement("input"), { id: "confirm-approve-word", autocomplete: "off", spellcheck: false });
      buttons?.before(label, box);
      const yes = document.getElementById("confirm-approve-yes");
      box.addEventListener("input", () => { if (yes) yes.disabled = !confirmWordTyped(); });
      // A letter typed anywhere in the dialog goes into the box (focus stays on Cancel until then).
      confirmDialog.addEventListener("keydown", (e) => {
        if (e.key.length === 1 && e.key !== " " && !e.ctrlKey && !e.metaKey && !e.altKey && e.target !== box) box.focus();
      });
      box.addEventListener("keydown", (e) => {
        if (e.key !== "Enter") return;
        e.preventDefault();
        if (confirmWordTyped()) confirmDialog.close("confirm");
      });
    }
    return box;
  }
  function confirmWordTyped() {
    return (confirmWordBox()?.value || "").trim().toLowerCase() === CONFIRM_WORD;
  }
  function resetConfirmWord() {
    const box = confirmWordBox();
    if (box) box.value = "";
    const yes = document.getElementById("confirm-approve-yes");
    if (yes) yes.disabled = true;
  }

  if (confirmDialog) {
    confirmDialog.addEventListener("close", () => {
      const form = approveForm();
      const submitter = pendingSubmitter;
      pendingSubmitter = null;
      if (confirmDialog.returnValue !== "confirm" || !form || !confirmWordTyped()) {
        form?.querySelector("button.approve")?.focus();
        return;
      }
      const box = form.querySelector("#confirm-risk");
      if (box) box.checked = true;
      form.dataset.confirmed = "1";
      form.requestSubmit(submitter && form.contains(submitter) ? submitter : form.querySelector("button.approve"));
    });
  }

  // A click (or Enter/Space) on an approve-form button of a risky action asks first.
  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest(".approve-form[data-confirm] button[type=submit]");
    if (!button) return;
    const form = button.form;
    if (form.dataset.confirmed === "1") return;
    if (!confirmDialog || typeof confirmDialog.showModal !== "function") return; // the checkbox asks instead
    e.preventDefault();
    approve(button);
  }, true);

  // Hash intents from the queue (a / r / e on a selected row).
  function applyIntent() {
    const intent = window.location.hash.slice(1);
    if (intent === "reject") focusReject();
    else if (intent === "edit") startEdits();
    else if (intent === "approve") approveForm()?.querySelector("button.approve")?.focus();
  }

  // Edited parameters are checked as the reviewer types by static/js/edit_form.js (the form and the raw JSON).

  // Ctrl/Cmd+Enter in a text box sends its form (Enter alone makes a new line).
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey) || !(e.target instanceof HTMLTextAreaElement)) return;
    const form = e.target.form;
    if (!form) return;
    e.preventDefault();
    if (form.classList.contains("approve-form")) approve();
    else form.requestSubmit();
  });

  // --- filters apply themselves ----------------------------------------------------------------
  document.addEventListener("change", (e) => {
    if (e.target.matches && e.target.matches("[data-autosubmit]")) e.target.form?.requestSubmit();
  });

  // --- the shortcuts --------------------------------------------------------------------------------
  const help = document.getElementById("shortcuts");
  function showHelp() {
    if (help && typeof help.showModal === "function" && !help.open) help.showModal();
  }
  document.addEventListener("click", (e) => {
    if (e.target.closest && e.target.closest("[data-show-shortcuts]")) showHelp();
  });

  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    if (typingIn(e.target) || openDialog()) return;
    const key = e.key;
    if (key === "?") { e.preventDefault(); showHelp(); return; }

    if (page === "queue") {
      if (key === "j" || key === "k") {
        e.preventDefault();
        const i = currentIndex();
        select(i < 0 ? 0 : i + (key === "j" ? 1 : -1));
      } else if (key === "Enter") {
        // A focused link or button does its own thing; this is for a selection without focus.
        if (e.target !== body && e.target !== document.documentElement) return;
        const row = selectedRow();
        if (row) { e.preventDefault(); openRow(row); }
      } else if (key === "a" || key === "r" || key === "e") {
        const row = selectedRow();
        if (row) { e.preventDefault(); openRow(row, { a: "approve", r: "reject", e: "edit" }[key]); }
      } else if (key === "/") {
        const search = document.getElementById("f-q");
        if (search) {
          e.preventDefault();
          const wrap = document.getElementById("filters-wrap");
          if (wrap) wrap.open = true;
          search.focus();
          search.select();
        }
      }
    } else if (page === "detail") {
      if (key === "a") { if (approve()) e.preventDefault(); }
      else if (key === "r") { if (focusReject()) e.preventDefault(); }
      else if (key === "e") { if (startEdits()) e.preventDefault(); }
      else if (key === "u") { e.preventDefault(); window.location.assign(document.querySelector(".crumbs a")?.href || "/"); }
    }
  });

  // --- deadlines count down -------------------------------------------------------------------------
  function until(ms) {
    const minutes = Math.round(ms / 60000);
    if (minutes < 1) return "in less than a minute";
    if (minutes < 60) return `in ${minutes} min`;
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return `in ${hours} h ${minutes % 60} min`;
    return `in ${Math.floor(hours / 24)} d ${hours % 24} h`;
  }
  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("time.expiry")) {
      const ms = new Date(el.getAttribute("datetime")).getTime() - now;
      el.textContent = ms <= 0 ? "expiring" : until(ms);
      const cell = el.closest("td.expires");
      if (cell) {
        cell.classList.toggle("expired", ms <= 0);
        cell.classList.toggle("urgent", ms > 0 && ms < 15 * 60000);
        cell.classList.toggle("soon", ms >= 15 * 60000 && ms < 2 * 3600000);
      }
    }
  }
  window.setInterval(tick, 30000);
  document.addEventListener("countersign:queue-updated", tick);

  // On a narrow screen the filters fold away until asked for (unless some are in use).
  const filtersWrap = document.getElementById("filters-wrap");
  if (filtersWrap && filtersWrap.hasAttribute("data-default") && window.matchMedia("(max-width: 1100px)").matches) {
    filtersWrap.open = false;
  }

  if (page === "detail") applyIntent();
  if (page === "queue" && window.location.hash === "#first") select(0);
})();
