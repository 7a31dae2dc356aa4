// Approve with edits, in a form (issue 20): the action type's JSON Schema, mapped to widgets on the server
// (approvals/presentation/edit_form.py, embedded as #edit-form-spec), drawn here with the proposal's values.
// Whatever the form holds is written as JSON into #approve-params, the field the approve form always sent, so
// approving and its server-side checks do not change; "Raw JSON" shows that field itself.
//
// As the reviewer types, the edit is checked by the desk's live check (approvals/web/desk_views.py check_params,
// the one edit check approving runs) with compare=1: its errors go beside the fields they name, the policy that
// would now apply beside the form, and the comparison (the edit against the agent's proposal, and the preview
// recomputed from the edit against the target now) is drawn from the server's HTML.
(function () {
  "use strict";
  if (window.countersignEditForm) return; // the partial is drawn again on every live update
  window.countersignEditForm = true;

  const CHECK_DELAY = 300; // ms after the last keystroke
  // Characters a form field would hide; such a string is edited in Raw JSON, where they are written as \uXXXX.
  const INVISIBLE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u00AD\u061C\u115F\u1160\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF9-\uFFFB]/;

  let ids = 0;
  let state = null;

  function h(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props || {});
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  // --- widgets: each returns { el, focusable, get(problems) -> value } ---------------------------
  function looksLikeCode(text) {
    const lines = text.split("\n");
    if (lines.length < 2) return false;
    const indented = lines.filter((l) => /^(\t| {2,})\S/.test(l)).length;
    const syntax = lines.filter((l) => /[{};<>]\s*$|^\s*[\w.-]+\s*[=:]\s*\S/.test(l)).length;
    return indented >= 2 || syntax >= Math.max(2, lines.length / 3);
  }

  // The schema says nothing (a free-form object, `json` of an HTTP request): follow the value the agent sent.
  function infer(value) {
    if (typeof value === "string") return { kind: "string", multiline: value.includes("\n") || value.length > 120, mono: null };
    if (typeof value === "number") return { kind: "number", integer: false };
    if (typeof value === "boolean") return { kind: "boolean" };
    if (Array.isArray(value)) return { kind: "array", item: value.length ? { kind: "free" } : { kind: "json" } };
    if (value && typeof value === "object") return { kind: "object", fields: [], extra: { kind: "free" } };
    return { kind: "json" };
  }

  function resolve(spec, value) {
    return spec.kind === "free" ? { ...infer(value), help: spec.help } : spec;
  }

  function initial(spec) {
    switch (spec.kind) {
      case "select": return spec.options[0];
      case "number": return spec.minimum ?? 0;
      case "boolean": return false;
      case "array": return [];
      case "object": return {};
      case "json": return null;
      default: return "";
    }
  }

  function widget(spec, value, path, labelId) {
    spec = resolve(spec, value);
    const make = { string: stringWidget, select: selectWidget, number: numberWidget, boolean: booleanWidget,
      array: arrayWidget, object: objectWidget }[spec.kind] || jsonWidget;
    const made = make(spec, value, path, labelId);
    made.spec = spec;
    return made;
  }

  function stringWidget(spec, value, path, id) {
    const text = typeof value === "string" ? value : value == null ? "" : String(value);
    const multiline = spec.multiline || text.includes("\n");
    const mono = spec.mono ?? looksLikeCode(text);
    let input;
    if (multiline) {
      const lines = text.split("\n").length;
      input = h("textarea", { id, rows: Math.min(24, Math.max(mono ? 6 : 4, lines + 1)), spellcheck: !mono, value: text });
    } else {
      input = h("input", { id, type: "text", value: text, spellcheck: false, autocomplete: "off" });
    }
    if (mono) input.classList.add("code");
    if (spec.maxLength) input.maxLength = spec.maxLength;
    input.dataset.path = path;
    const hidden = INVISIBLE.test(text);
    if (hidden) input.readOnly = true;
    const el = h("div", { className: "ef-control" }, input,
      hidden ? h("p", { className: "warn small", textContent: "It contains characters you could not see here; edit it in Raw JSON, where they are written as \\uXXXX." }) : null);
    return { el, focusable: input, get: () => input.value };
  }

  function selectWidget(spec, value, path, id) {
    const select = h("select", { id });
    select.dataset.path = path;
    const options = [...spec.options];
    if (value !== undefined && !options.some((o) => JSON.stringify(o) === JSON.stringify(value))) options.push(value);
    for (const option of options) {
      const label = typeof option === "string" ? option : JSON.stringify(option);
      select.append(h("option", { value: JSON.stringify(option), textContent: label, selected: JSON.stringify(option) === JSON.stringify(value) }));
    }
    return { el: h("div", { className: "ef-control" }, select), focusable: select, get: () => JSON.parse(select.value) };
  }

  function numberWidget(spec, value, path, id) {
    const input = h("input", { id, type: "number", step: spec.integer ? "1" : "any", inputMode: spec.integer ? "numeric" : "decimal" });
    if (typeof value === "number") input.value = String(value);
    if (spec.minimum != null) input.min = String(spec.minimum);
    if (spec.maximum != null) input.max = String(spec.maximum);
    input.dataset.path = path;
    function get(problems) {
      const problem = (message) => { problems.push({ path, message, input }); return undefined; };
      if (input.validity.badInput) return problem("Not a number.");
      if (input.value.trim() === "") return problem("Enter a number.");
      const n = Number(input.value);
      if (!Number.isFinite(n)) return problem("Not a number.");
      if (spec.integer && !Number.isInteger(n)) return problem("Must be a whole number.");
      if (spec.minimum != null && n < spec.minimum) return problem(`Must be at least ${spec.minimum}.`);
      if (spec.maximum != null && n > spec.maximum) return problem(`Must be at most ${spec.maximum}.`);
      if (spec.exclusiveMinimum != null && n <= spec.exclusiveMinimum) return problem(`Must be more than ${spec.exclusiveMinimum}.`);
      if (spec.exclusiveMaximum != null && n >= spec.exclusiveMaximum) return problem(`Must be less than ${spec.exclusiveMaximum}.`);
      return n;
    }
    return { el: h("div", { className: "ef-control" }, input), focusable: input, get };
  }

  function booleanWidget(spec, value, path, id) {
    const box = h("input", { id, type: "checkbox", checked: value === true });
    box.dataset.path = path;
    return { el: h("div", { className: "ef-control ef-check" }, box), focusable: box, get: () => box.checked };
  }

  function jsonWidget(spec, value, path, id) {
    const text = value === undefined ? "" : JSON.stringify(value, null, 2);
    const area = h("textarea", { id, className: "code", rows: Math.min(16, Math.max(3, text.split("\n").length + 1)), spellcheck: false, value: text });
    area.dataset.path = path;
    function get(problems) {
      try {
        return JSON.parse(area.value);
      } catch (err) {
        problems.push({ path, message: "Not valid JSON.", input: area });
        return undefined;
      }
    }
    return { el: h("div", { className: "ef-control" }, area, h("p", { className: "muted small", textContent: "Raw JSON" })), focusable: area, get };
  }

  function arrayWidget(spec, value, path, id) {
    let items = [];
    const list = h("ol", { className: "ef-items" });
    const name = path.slice(path.lastIndexOf(".") + 1); // the list's own key: "to", item 2 is "to, item 2"
    // Paths name items by position (params.to.1): after a removal every item is drawn again at its new place.
    function draw(values) {
      items = [];
      list.replaceChildren();
      values.forEach((v, i) => {
        const itemId = `ef-${++ids}`;
        const made = widget(spec.item, v, `${path}.${i}`, itemId);
        const remove = h("button", { type: "button", className: "ef-remove", textContent: "Remove" });
        remove.setAttribute("aria-label", `Remove ${name}, item ${i + 1}`);
        remove.addEventListener("click", () => {
          const rest = current();
          rest.splice(i, 1);
          draw(rest);
          changed();
          (items[Math.min(i, items.length - 1)]?.focusable || more).focus();
        });
        list.append(h("li", { className: "ef-item" },
          h("label", { htmlFor: itemId, className: "visually-hidden", textContent: `${name}, item ${i + 1}` }), made.el, remove, errorSlot(`${path}.${i}`)));
        items.push(made);
      });
    }
    const current = () => items.map((made) => made.get([]));
    const more = h("button", { type: "button", className: "ef-add", textContent: "Add an item" });
    more.addEventListener("click", () => {
      const like = spec.item.kind === "free" && items.length ? items[items.length - 1].spec : spec.item;
      draw([...current(), initial(resolve(like, undefined))]);
      changed();
      items[items.length - 1]?.focusable?.focus();
    });
    draw(Array.isArray(value) ? value : []);
    const el = h("div", { className: "ef-array", id }, list, more);
    el.setAttribute("role", "group");
    return { el, focusable: items[0]?.focusable || more, get: (problems) => items.map((made) => made.get(problems)) };
  }

  function errorSlot(path) {
    const slot = h("p", { className: "ef-error error-text small", hidden: true });
    slot.dataset.errorFor = path;
    return slot;
  }

  function objectWidget(spec, value, path, id) {
    const current = value && typeof value === "object" && !Array.isArray(value) ? value : {};
    const rows = []; // { key, made, row }
    const body = h("div", { className: "ef-fields" });
    const known = new Map(spec.fields.map((f) => [f.key, f]));
    const root = path === "params";

    function addRow(key, fieldSpec, fieldValue, removable) {
      const fieldId = `ef-${++ids}`;
      const fieldPath = `${path}.${key}`;
      const made = widget(fieldSpec, fieldValue, fieldPath, fieldId);
      const label = h("label", { htmlFor: fieldId, className: "ef-label" }, h("span", { className: "ef-key", textContent: key }));
      const head = h("div", { className: "ef-head" }, label);
      if (fieldSpec.required) {
        // Said to a screen reader by aria-required, not as part of the field's name (the parameter's key).
        const mark = h("span", { className: "ef-required", textContent: "required" });
        mark.setAttribute("aria-hidden", "true");
        head.append(mark);
        made.focusable?.setAttribute("aria-required", "true");
      }
      if (removable) {
        const remove = h("button", { type: "button", className: "ef-remove", textContent: "Remove" });
        remove.setAttribute("aria-label", `Remove ${key}`);
        remove.addEventListener("click", () => {
          rows.splice(rows.indexOf(entry), 1);
          row.remove();
          refreshOptional();
          changed();
        });
        head.append(remove);
      }
      const row = h("div", { className: `ef-row ef-${made.spec.kind}` }, head);
      if (fieldSpec.help) {
        const help = h("p", { className: "muted small ef-help", id: `${fieldId}-help`, textContent: fieldSpec.help });
        made.focusable?.setAttribute("aria-describedby", help.id);
        row.append(help);
      }
      row.append(made.el, errorSlot(fieldPath));
      const entry = { key, made, row };
      rows.push(entry);
      body.append(row);
      return entry;
    }

    for (const field of spec.fields) {
      if (field.required || Object.prototype.hasOwnProperty.call(current, field.key)) {
        addRow(field.key, field, Object.prototype.hasOwnProperty.call(current, field.key) ? current[field.key] : initial(resolve(field, undefined)), !field.required);
      }
    }
    for (const [key, v] of Object.entries(current)) {
      if (!known.has(key)) addRow(key, spec.extra || { kind: "json" }, v, true);
    }

    // Optional fields the value leaves out, and (where the schema allows) fields it does not name.
    const adder = h("div", { className: "ef-adder" });
    const optionalId = `ef-${++ids}`;
    const optional = h("select", { id: optionalId });
    const addOptional = h("button", { type: "button", className: "ef-add", textContent: "Add" });
    const optionalLabel = h("label", { htmlFor: optionalId, className: "small", textContent: "Add an optional field " });
    function refreshOptional() {
      const absent = spec.fields.filter((f) => !rows.some((r) => r.key === f.key));
      optional.replaceChildren(...absent.map((f) => h("option", { value: f.key, textContent: f.key })));
      optionalLabel.hidden = optional.hidden = addOptional.hidden = absent.length === 0;
    }
    addOptional.addEventListener("click", () => {
      const field = known.get(optional.value);
      if (!field) return;
      const entry = addRow(field.key, field, initial(resolve(field, undefined)), true);
      refreshOptional();
      changed();
      entry.made.focusable?.focus();
    });
    adder.append(optionalLabel, optional, addOptional);
    if (spec.extra) {
      const keyId = `ef-${++ids}`;
      const keyInput = h("input", { id: keyId, type: "text", className: "ef-new-key", autocomplete: "off", spellcheck: false });
      const addKey = h("button", { type: "button", className: "ef-add", textContent: "Add field" });
      addKey.addEventListener("click", () => {
        const key = keyInput.value.trim();
        if (!key || rows.some((r) => r.key === key)) { keyInput.focus(); return; }
        const entry = addRow(key, known.get(key) || spec.extra, initial(resolve(known.get(key) || spec.extra, "")), true);
        keyInput.value = "";
        refreshOptional();
        changed();
        entry.made.focusable?.focus();
      });
      adder.append(h("label", { htmlFor: keyId, className: "small", textContent: "New field named " }), keyInput, addKey);
    }
    refreshOptional();

    const el = root ? h("div", { className: "ef-object ef-root" }, body, adder) : h("fieldset", { className: "ef-object", id }, body, adder);
    function get(problems) {
      const out = {};
      for (const { key, made } of rows) out[key] = made.get(problems);
      return out;
    }
    return { el, focusable: rows[0]?.made.focusable, get };
  }

  // --- the form, the raw JSON, and the check -----------------------------------------------------
  function canonical(value) {
    if (Array.isArray(value)) return value.map(canonical);
    if (value && typeof value === "object") return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical(value[k])]));
    return value;
  }
  const same = (a, b) => JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));

  function parseObject(text) {
    try {
      const value = JSON.parse(text);
      return value && typeof value === "object" && !Array.isArray(value) ? value : null;
    } catch (err) {
      return null;
    }
  }

  function buildForm(value) {
    ids = 0;
    state.root = widget(state.spec, value, "params", "ef-root");
    state.form.replaceChildren(state.root.el);
  }

  function setView(view) {
    const s = state;
    if (view === "form") {
      const value = parseObject(s.textarea.value);
      if (!value) {
        showProblems([{ path: "params", message: "Fix the JSON (it must be one object) to edit it in the form." }]);
        return;
      }
      if (!s.root || !same(value, readForm([]) ?? {})) buildForm(value);
    }
    s.wrap.dataset.view = view;
    s.form.hidden = view !== "form";
    for (const button of s.wrap.querySelectorAll("[data-edit-view]")) button.setAttribute("aria-pressed", String(button.dataset.editView === view));
  }

  function readForm(problems) {
    return state.root ? state.root.get(problems) : null;
  }

  // The form changed: write its JSON where the approve form reads it (the proposal's own text when it equals
  // the proposal, so an untouched form is no draft), then check it.
  function changed() {
    const s = state;
    if (!s || !s.root) return;
    const problems = [];
    const value = readForm(problems);
    clearFieldErrors();
    if (problems.length) {
      showProblems(problems);
      block(true);
      return;
    }
    s.textarea.value = same(value, s.proposal) ? s.textarea.defaultValue : JSON.stringify(value, null, 2);
    schedule();
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(check, CHECK_DELAY);
  }

  function block(blocked) {
    const button = state.wrap.closest("form")?.querySelector("button.approve");
    if (!button) return;
    // Only undo what this script did: a preview that says execution will fail disables Approve too (evidence.js).
    if (blocked) {
      if (!button.disabled) { button.disabled = true; button.dataset.editBlocked = "1"; }
    } else if (button.dataset.editBlocked) {
      button.disabled = false;
      delete button.dataset.editBlocked;
    }
  }

  // The proposal's preview says execution will fail, so Approve is disabled (evidence.js). An edit whose own
  // preview no longer fails may be approved as it is: the server judges the preview of what runs, the edit.
  function fixesFailure(fixed) {
    const button = state.wrap.closest("form")?.querySelector("button.approve");
    if (!button || document.getElementById("preview")?.dataset.willFail !== "true") return;
    if (fixed && button.disabled && !button.dataset.editBlocked) {
      button.disabled = false;
      button.dataset.fixedByEdit = "1";
    } else if (!fixed && button.dataset.fixedByEdit) {
      button.disabled = true;
      delete button.dataset.fixedByEdit;
    }
  }

  function clearFieldErrors() {
    for (const slot of state.wrap.querySelectorAll(".ef-error")) { slot.hidden = true; slot.textContent = ""; }
    for (const bad of state.wrap.querySelectorAll("[aria-invalid]")) bad.removeAttribute("aria-invalid");
  }

  // A message for a path goes under the nearest field drawn for it (params.to.3 → the list "to" when item 3 is not
  // drawn); what no field claims stays in the list under the form.
  function placeError(path, message) {
    for (let p = path; p; p = p.includes(".") ? p.slice(0, p.lastIndexOf(".")) : "") {
      if (p === "params") break;
      const slot = [...state.wrap.querySelectorAll(".ef-error")].find((s) => s.dataset.errorFor === p);
      if (slot && state.wrap.dataset.view === "form") {
        slot.hidden = false;
        slot.append(h("span", { textContent: message + " " }));
        const input = [...state.form.querySelectorAll("[data-path]")].find((i) => i.dataset.path === p);
        input?.setAttribute("aria-invalid", "true");
        return true;
      }
    }
    return false;
  }

  function showProblems(problems) {
    const out = document.getElementById("params-errors");
    out.dataset.state = "invalid";
    const list = h("ul", { className: "error-list" });
    for (const { path, message } of problems) {
      placeError(path, message);
      list.append(h("li", {}, h("code", { textContent: path }), document.createTextNode(` ${message}`)));
    }
    out.replaceChildren(h("p", { className: "error-text small", textContent: "These parameters would be refused:" }), list);
    state.textarea.setAttribute("aria-invalid", "true");
    state.compare.hidden = true;
  }

  function csrfToken() {
    return state.wrap.closest("form")?.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
  }

  async function check() {
    const s = state;
    if (!s) return;
    const out = document.getElementById("params-errors");
    const mine = ++s.seq;
    out.dataset.state = "checking";
    let result;
    try {
      const response = await fetch(s.textarea.dataset.checkUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(), "X-Requested-With": "fetch" },
        body: new URLSearchParams({ params: s.textarea.value, compare: "1" }),
      });
      if (!response.ok) throw new Error(String(response.status));
      result = await response.json();
    } catch (err) {
      if (mine !== s.seq) return;
      out.dataset.state = "unchecked";
      out.replaceChildren(h("p", { className: "muted small", textContent: "Could not check the parameters just now; they will be checked when you approve." }));
      return;
    }
    if (mine !== s.seq || state !== s) return; // a newer check is on its way, or the panel was drawn again
    clearFieldErrors();
    if (!result.ok) {
      const problems = [];
      for (const [path, messages] of Object.entries(result.errors || {})) for (const message of messages) problems.push({ path, message });
      showProblems(problems);
      if (result.policy && result.policy.message) out.append(h("p", { className: "warn small policy-check", textContent: result.policy.message }));
      fixesFailure(false);
      block(true);
      return;
    }
    out.dataset.state = "valid";
    s.textarea.removeAttribute("aria-invalid");
    block(false);
    if (!result.changed) {
      out.replaceChildren(h("p", { className: "muted small", textContent: "No edits yet: approving approves the agent's proposal." }));
      s.compare.hidden = true;
      s.compare.replaceChildren();
      fixesFailure(false);
      return;
    }
    out.replaceChildren(h("p", { className: "ok-text small", textContent: "✓ Valid. You will approve the edited parameters." }));
    // The policy re-evaluated on the edit: the rule now in force, and whether this approval would count.
    if (result.policy && result.policy.message) {
      out.append(h("p", { className: result.policy.your_approval_counts ? "muted small policy-check" : "warn small policy-check", textContent: result.policy.message }));
    }
    if (result.compare_html != null) {
      const open = [...s.compare.querySelectorAll(".diff")].map((d) => d.dataset.view);
      s.compare.innerHTML = result.compare_html; // drawn by the server's templates, every value escaped there
      // Keep the diff view each diff was switched to (unified / side by side) across recomputations.
      [...s.compare.querySelectorAll(".diff")].forEach((d, i) => { if (open[i] && open[i] !== d.dataset.view) d.querySelector(`.diff-view-btn[data-view="${open[i]}"]`)?.click(); });
      s.compare.hidden = false;
      s.compare.dataset.willFail = String(Boolean(result.preview && result.preview.will_fail));
      fixesFailure(Boolean(result.preview) && !result.preview.will_fail);
    }
  }

  // The view the reviewer chose (form or raw JSON), kept when a live update draws the panel again.
  let chosenView = "form";

  function init() {
    const wrap = document.getElementById("edit-form-wrap");
    if (!wrap || wrap.dataset.ready) return;
    const textarea = document.getElementById("approve-params");
    const specNode = document.getElementById("edit-form-spec");
    const proposal = parseObject(textarea?.defaultValue || "");
    wrap.dataset.ready = "1";
    state = { wrap, textarea, form: document.getElementById("edit-form"), compare: document.getElementById("edit-compare"), spec: null, root: null, proposal, seq: 0, timer: null };
    textarea.addEventListener("input", () => schedule());
    if (!specNode || !proposal) return; // raw JSON only: the type is not installed, or the proposal is no object
    state.spec = JSON.parse(specNode.textContent);
    const toggle = wrap.querySelector(".edit-views");
    toggle.hidden = false;
    toggle.addEventListener("click", (e) => {
      const button = e.target.closest("[data-edit-view]");
      if (!button) return;
      chosenView = button.dataset.editView;
      setView(chosenView);
    });
    state.form.addEventListener("input", changed);
    state.form.addEventListener("change", changed);
    const hadFocus = document.activeElement === textarea;
    setView(chosenView);
    if (textarea.value !== textarea.defaultValue) schedule(); // a draft kept across a live update
    if (hadFocus) focusFirst();
  }

  function focusFirst() {
    if (!state || state.wrap.dataset.view !== "form") return false;
    // The field the check refused first (Approve is disabled until it is fixed), else the first field.
    const first = state.form.querySelector("[aria-invalid=true]") || state.form.querySelector("input, select, textarea");
    first?.focus();
    return Boolean(first);
  }
  window.countersignEditFocus = focusFirst; // static/js/desk.js: `e` opens the edits at the first field

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
  document.addEventListener("countersign:detail-updated", init);
})();
