"""Display marking on its own (approvals/presentation/display.py): every invisible character and look-alike letter
an agent could send is shown visibly marked, and nothing else is touched (every screen that shows it:
tests/web/test_display_marking.py)."""

from __future__ import annotations

import json

import pytest
from django.template import Context, Template

from approvals.presentation import display
from approvals.presentation.diffs import Segment, text_diff

RLO, PDF = "\u202e", "\u202c"
DECEPTIVE = f"/tickets/{RLO}321/etelednimda{PDF}"
MARKED = "/tickets/⟨U+202E⟩321/etelednimda⟨U+202C⟩"
CYRILLIC_A = "\u0430"


# Every kind of character the marking covers, and one example of each.
INVISIBLE = {
    "bidi override": "\u202e",
    "bidi embedding": "\u202a",
    "bidi isolate": "\u2066",
    "left-to-right mark": "\u200e",
    "arabic letter mark": "\u061c",
    "zero width space": "\u200b",
    "zero width non-joiner": "\u200c",
    "zero width joiner (between letters)": "\u200d",
    "word joiner": "\u2060",
    "byte order mark": "\ufeff",
    "soft hyphen": "\u00ad",
    "NUL": "\x00",
    "escape": "\x1b",
    "bell": "\x07",
    "lone carriage return": "\r",
    "delete": "\x7f",
    "C1 next line": "\x85",
    "C1 control": "\x9b",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "variation selector (after a letter)": "\ufe0f",
    "variation selector supplement": "\U000e0100",
    "tag character": "\U000e0041",
    "cancel tag": "\U000e007f",
    "hangul filler": "\u3164",
    "combining grapheme joiner": "\u034f",
    "mongolian vowel separator": "\u180e",
    "lone surrogate": "\ud800",
}


@pytest.mark.parametrize("name", sorted(INVISIBLE))
def test_every_invisible_character_is_marked_with_its_code_point(name):
    ch = INVISIBLE[name]
    shown = display.mark_invisible(f"ab{ch}cd")
    assert ch not in shown
    assert shown == f"ab⟨U+{ord(ch):04X}⟩cd"
    assert display.findings({"x": f"a{ch}b"}, "params") and f"U+{ord(ch):04X}" in display.findings(f"a{ch}", "s")[0]


def test_the_deceptive_path_reads_as_it_will_run():
    assert display.mark_invisible(DECEPTIVE) == MARKED
    html = display.mark_html(DECEPTIVE)
    assert RLO not in html and PDF not in html
    assert '<span class="invisible-char" title="U+202E RIGHT-TO-LEFT OVERRIDE">⟨U+202E⟩</span>' in html


def test_ordinary_text_is_left_alone():
    for text in (
        "Restart the billing service",
        "line one\nline two\twith a tab\r\nand a CRLF",
        "Grüße, café, naïve, Ελληνικά, Русский текст, 日本語",
        "family 👨\u200d👩\u200d👧 heart ❤\ufe0f keycap 1\ufe0f\u20e3 thumbs 👍🏽",
        "user_name-1.2@example.com",
    ):
        assert display.mark_invisible(text) == text, text
        assert display.findings(text) == []


def test_a_joiner_leaning_on_a_stray_selector_is_marked_too():
    # "*" takes U+FE0F only before a keycap; the joiner after that stray selector joins no emoji (found by
    # Hypothesis in tests/slack/test_slack_limits.py). Marked once, the text stays marked when checked again.
    marked = display.mark_invisible("*\ufe0f\u200d\U0001f000")
    assert marked == "*⟨U+FE0F⟩⟨U+200D⟩\U0001f000"
    assert display.mark_invisible(marked) == marked
    assert display.mark_invisible("❤\ufe0f\u200d🔥") == "❤\ufe0f\u200d🔥"  # heart on fire: one emoji


def test_a_name_mixing_latin_with_cyrillic_or_greek_is_flagged():
    shown = display.mark_invisible(f"#prod-{CYRILLIC_A}dmins")
    assert CYRILLIC_A not in shown.replace(f"⟨Cyrillic {CYRILLIC_A} U+0430⟩", "")
    assert shown == f"#prod-⟨Cyrillic {CYRILLIC_A} U+0430⟩dmins"
    assert display.mark_invisible("p\u0391yp\u03b1l") == "p⟨Greek \u0391 U+0391⟩yp⟨Greek \u03b1 U+03B1⟩l"
    # A Latin look-alike in a Russian word is the minority there, and is the one marked.
    privet = "\u043fp\u0438\u0432\u0435\u0442"  # "привет" with a Latin p
    assert display.mark_invisible(privet) == "\u043f⟨Latin p U+0070⟩\u0438\u0432\u0435\u0442"
    [finding] = display.findings({"channel": f"#prod-{CYRILLIC_A}dmins"}, "params")
    assert finding.startswith("params.channel:") and "Cyrillic" in finding


def test_findings_cover_keys_values_and_nesting():
    found = display.findings({"ok": 1, f"to{RLO}": {"list": ["fine", "x\u200by"]}}, "params")
    assert any(f.startswith("params.to⟨U+202E⟩ (the key):") for f in found)
    assert any(f.startswith("params.to⟨U+202E⟩.list[1]:") and "U+200B" in f for f in found)


def test_the_edit_box_shows_escapes_and_still_parses_to_the_same_value():
    params = {"path": DECEPTIVE, "channel": f"#prod-{CYRILLIC_A}dmins", "tag": "\U000e0041", "c1": "\x85"}
    text = display.json_for_editing(params)
    assert "\\u202e" in text and "\\u0430" in text and "\\udb40\\udc41" in text
    assert not any(display.is_invisible(text, i) for i in range(len(text)))
    assert json.loads(text) == params


def test_diff_segments_are_marked_and_a_look_alike_is_found_across_segments():
    diff = text_diff("channel: #prod-admins\n", f"channel: #prod-{CYRILLIC_A}dmins{RLO}\n")
    [row] = [r for r in diff.rows if r.kind == "replace"]
    html = display.segments_html(row.new)
    assert "⟨Cyrillic" in html and "⟨U+202E⟩" in html and RLO not in html
    assert "<mark>" in html  # the changed part is still highlighted
    assert str(display.segments_html([Segment("<b>"), Segment("&", True)])) == "&lt;b&gt;<mark>&amp;</mark>"


def test_the_template_filters():
    rendered = Template("{% load countersign %}{{ t|visible }}|{{ t|visible_text }}|{{ none|visible }}").render(
        Context({"t": f"<i>{RLO}"})
    )
    assert rendered.startswith('&lt;i&gt;<span class="invisible-char"')
    assert rendered.endswith("|&lt;i&gt;⟨U+202E⟩|")
