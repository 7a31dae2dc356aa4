/* Diffs reviewers trust (issue 20): collapsed context expands in place, and lines are syntax-highlighted with
   the vendored highlight.js 11.12.0 (static/vendor/highlight/, loaded only on pages that show a diff).

   Highlighting runs per line on the text the server rendered, and keeps what the server marked: the
   changed words (<mark>) are laid back over the highlighted tokens at the same character offsets, and a
   line holding a marker for an invisible or look-alike character is left exactly as rendered. */
(() => {
  "use strict";

  const VENDOR = new URL("../vendor/highlight/", document.currentScript.src);
  const LANGUAGES = new Set(["json", "yaml", "nginx", "ini", "markdown", "python", "javascript", "bash", "xml"]);

  // --- expandable context ------------------------------------------------------------------
  document.addEventListener("click", (event) => {
    const button = event.target.closest(".diff-expand");
    if (!button) return;
    const gap = button.closest("tbody");
    const hidden = gap && gap.nextElementSibling;
    if (!hidden || !hidden.classList.contains("diff-hidden")) return;
    hidden.hidden = false;
    gap.hidden = true;
    // Keep keyboard users where they were: on the first line that appeared.
    const first = hidden.querySelector("tr");
    if (first) {
      first.tabIndex = -1;
      first.focus({ preventScroll: true });
    }
  });

  // --- syntax highlighting -----------------------------------------------------------------
  function markRanges(cell) {
    const ranges = [];
    let at = 0;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const length = node.data.length;
      if (node.parentElement.closest("mark")) ranges.push([at, at + length]);
      at += length;
    }
    return ranges;
  }

  function wrapRanges(fragment, ranges) {
    if (!ranges.length) return;
    const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT);
    const nodes = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) nodes.push(node);
    let at = 0;
    for (const node of nodes) {
      const start = at;
      at += node.data.length;
      const overlaps = ranges
        .map(([lo, hi]) => [Math.max(lo, start), Math.min(hi, at)])
        .filter(([lo, hi]) => lo < hi)
        .reverse(); // split from the end so earlier offsets stay valid
      for (const [lo, hi] of overlaps) {
        if (hi - start < node.data.length) node.splitText(hi - start);
        const piece = lo > start ? node.splitText(lo - start) : node;
        const mark = document.createElement("mark");
        piece.replaceWith(mark);
        mark.append(piece);
      }
    }
  }

  function highlightCell(hljs, cell, language) {
    if (cell.classList.contains("hl") || cell.querySelector(".invisible-char, .homoglyph")) return;
    const text = cell.textContent;
    if (!text.trim()) return;
    const ranges = markRanges(cell);
    const template = document.createElement("template");
    // highlight.js escapes the text it is given; its output is its own <span class="hljs-…"> markup only.
    template.innerHTML = hljs.highlight(text, { language, ignoreIllegals: true }).value;
    wrapRanges(template.content, ranges);
    if (template.content.textContent !== text) return; // never show anything but what the server sent
    cell.replaceChildren(template.content);
    cell.classList.add("hl");
  }

  async function load(language) {
    const { default: hljs } = await import(new URL("core.min.js", VENDOR));
    if (!hljs.getLanguage(language)) {
      const { default: grammar } = await import(new URL(`languages/${language}.min.js`, VENDOR));
      hljs.registerLanguage(language, grammar);
    }
    return hljs;
  }

  async function highlightAll(root) {
    for (const block of root.querySelectorAll("[data-language]:not([data-highlighted])")) {
      if (block.dataset.highlighted) continue; // taken by a run that started meanwhile
      const language = block.dataset.language;
      if (!LANGUAGES.has(language)) {
        block.dataset.highlighted = "none";
        continue;
      }
      block.dataset.highlighted = "pending";
      try {
        const hljs = await load(language);
        const cells = block.matches("pre") ? [block] : block.querySelectorAll("td.code");
        for (const cell of cells) highlightCell(hljs, cell, language);
        block.dataset.highlighted = language;
      } catch (error) {
        block.dataset.highlighted = "failed"; // plain text is still the whole truth
      }
    }
  }

  function start() {
    highlightAll(document);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  document.addEventListener("countersign:detail-updated", start);
  // Fragments drawn later (the triage pane, the edit comparison) get the same treatment, once per frame.
  let queued = false;
  new MutationObserver(() => {
    if (queued || !document.querySelector("[data-language]:not([data-highlighted])")) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      start();
    });
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
