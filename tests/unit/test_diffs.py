"""The diffs reviewers read, computed on their own: text diffs mark changed characters, JSON diffs list changes
by path, huge diffs are capped (the pages that show them: tests/web/test_previews.py)."""

from __future__ import annotations

from approvals.presentation.diffs import MAX_EXPANDABLE, MAX_ROWS, json_diff, text_diff


def test_text_diff_marks_changed_characters_and_collapses_unchanged_regions():
    before = "\n".join(f"line {i}" for i in range(1, 101))
    after = before.replace("line 50", "line fifty")
    diff = text_diff(before, after)
    assert (diff.added, diff.removed) == (1, 1)
    [changed] = [r for r in diff.rows if r.kind == "replace"]
    assert [s.text for s in changed.new if s.changed] == ["fifty"]
    gaps = [r.skipped for r in diff.rows if r.kind == "skip"]
    assert gaps == [46, 47]  # everything but 3 lines of context around the change
    assert len(diff.rows) == 9


def test_huge_diffs_are_capped_with_a_notice():
    before = "\n".join(f"a{i}" for i in range(5000))
    after = "\n".join(f"b{i}" for i in range(5000))
    diff = text_diff(before, after)
    assert len(diff.rows) == MAX_ROWS and "only the first" in diff.truncated


def test_json_diff_lists_changes_by_path():
    changes, notice = json_diff({"a": 1, "b": [1, 2], "c": {"x": 1}}, {"a": 2, "b": [1], "c": {"x": 1, "y": True}})
    assert [(c.path, c.kind) for c in changes] == [("a", "changed"), ("b[1]", "removed"), ("c.y", "added")]
    assert notice == ""


# --- issue 20: two number columns, word-level changes, expandable context, languages --------------


def test_the_unified_view_numbers_old_and_new_lines_in_their_own_columns():
    before = "a\nb\nc\n"
    after = "a\nnew line\nb\nc changed\n"
    lines = text_diff(before, after).unified_lines()
    assert [(u.sign, u.old_no, u.new_no) for u in lines] == [
        (" ", 1, 1),
        ("+", None, 2),
        (" ", 2, 3),
        ("-", 3, None),
        ("+", None, 4),
    ]


def test_changed_lines_are_marked_word_by_word():
    diff = text_diff("  members: [bob, carol]\n", "  members: [dana, carol]\n")
    [row] = [r for r in diff.rows if r.kind == "replace"]
    assert [(s.text, s.changed) for s in row.old] == [("  members: [", False), ("bob", True), (", carol]", False)]
    assert [s.text for s in row.new if s.changed] == ["dana"]
    # A whole word is marked, never a scatter of letters it shares with the old one ("listen 80" → "listen 8080").
    [row] = [r for r in text_diff("listen 80;\n", "listen 8080;\n").rows if r.kind == "replace"]
    assert [s.text for s in row.new if s.changed] == ["8080"]
    # Two changed words with one space between them read as one change.
    [row] = [r for r in text_diff("the red car\n", "the blue bike\n").rows if r.kind == "replace"]
    assert [s.text for s in row.new if s.changed] == ["blue bike"]


def test_collapsed_context_carries_its_lines_with_both_numbers_so_it_can_be_expanded():
    before = "\n".join(f"line {i}" for i in range(1, 21))
    after = before.replace("line 10", "line ten").replace("line 2\n", "")
    diff = text_diff(before, after)
    gaps = [r for r in diff.rows if r.kind == "skip"]
    assert [g.skipped for g in gaps] == [1, 7]
    # Old and new numbers differ by the deleted line 2; each collapsed line keeps both.
    assert [(r.old_no, r.new_no) for r in gaps[0].hidden] == [(6, 5)]
    assert [(r.old_no, r.new_no) for r in gaps[1].hidden][:2] == [(14, 13), (15, 14)]
    assert [r.new[0].text for r in gaps[1].hidden] == [f"line {i}" for i in range(14, 21)]
    # The unified view hands the same lines over, numbered on both sides.
    unified_gap = [u for u in diff.unified_lines() if u.sign == "…"][1]
    assert (unified_gap.skipped, unified_gap.hidden[0].old_no, unified_gap.hidden[0].new_no) == (7, 14, 13)


def test_a_very_long_unchanged_run_is_collapsed_without_its_lines():
    before = "\n".join(f"x{i}" for i in range(MAX_EXPANDABLE + 50))
    diff = text_diff(before, before + "\nlast")
    [gap] = [r for r in diff.rows if r.kind == "skip"]
    assert gap.skipped == MAX_EXPANDABLE + 47 and gap.hidden == []


def test_the_language_is_guessed_from_the_content():
    assert text_diff("{}", '{"a": 1}').language == "json"
    assert text_diff("", "server {\n  listen 80;\n}\n").language == "nginx"
    assert text_diff("", "[main]\nport = 80\n").language == "ini"
    assert text_diff("", "name: web\nreplicas: 3\n").language == "yaml"
    assert text_diff("", "# Release notes\n\n- fixed\n").language == "markdown"
    assert text_diff("", "def main():\n    pass\n").language == "python"
    assert text_diff("", "just a sentence\n").language == ""
