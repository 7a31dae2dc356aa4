"""The diffs reviewers read, computed on their own: text diffs mark changed characters, JSON diffs list changes
by path, huge diffs are capped (the pages that show them: tests/web/test_previews.py)."""

from __future__ import annotations

from approvals.presentation.diffs import MAX_ROWS, json_diff, text_diff


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
