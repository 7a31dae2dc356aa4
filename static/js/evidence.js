// Issue 20 (evidence and previews): keeps the decision form honest after live updates, and keeps a decided
// action's "What ran" current. The page works without it: the server renders both and refuses what it must.
(function () {
  "use strict";
  if (window.countersignEvidence) return; // included by more than one partial
  window.countersignEvidence = true;

  const preview = () => document.getElementById("preview");

  // The live panel is re-rendered without the preview: put back what the page computed with it.
  function restoreDecisionForm() {
    const shown = preview();
    const form = document.querySelector("#live-panel .approve-form");
    if (!shown || !form) return;
    const seen = form.querySelector("input[name=preview_fingerprint]");
    if (seen && !seen.value) seen.value = shown.dataset.fingerprint || "";
    if (shown.dataset.willFail !== "true" || form.querySelector("#override-reason")) return;
    const button = form.querySelector("button.approve");
    const template = document.getElementById("override-template");
    if (button) {
      button.disabled = true;
      button.title = "The preview says execution will fail";
    }
    if (template && button) button.before(template.content.cloneNode(true));
  }

  // "Approve anyway" needs the typed reason: say so where it is typed rather than send an empty one (on window,
  // capturing: before desk.js's high-risk confirmation sees the click).
  window.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("button.approve-anyway");
    if (!button) return;
    const reason = button.form?.querySelector("#override-reason");
    if (reason && !reason.value.trim()) {
      e.preventDefault();
      e.stopImmediatePropagation();
      reason.setCustomValidity("Say why you approve although the preview says it will fail.");
      reason.reportValidity();
      reason.focus();
    }
  }, true);
  document.addEventListener("input", (e) => {
    if (e.target.id === "override-reason") e.target.setCustomValidity("");
  });

  // A decided action moving on (approved → executing → succeeded): re-read "What ran" from the page.
  async function refreshDecided() {
    const decided = document.getElementById("decided");
    const status = document.querySelector("#live-panel .status-card")?.dataset.status;
    if (!decided || !status || decided.dataset.status === status) return;
    const response = await fetch(window.location.href, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
    if (response.status !== 200) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.getElementById("decided");
    const openIds = [...decided.querySelectorAll("details[open]")].map((d) => d.closest("[id]")?.id);
    if (!fresh) return;
    for (const id of openIds) fresh.querySelector(`#${CSS.escape(id || "")} details`)?.setAttribute("open", "");
    decided.replaceWith(fresh);
  }

  document.addEventListener("countersign:detail-updated", () => {
    restoreDecisionForm();
    refreshDecided().catch(() => { /* the next update tries again */ });
  });
})();
