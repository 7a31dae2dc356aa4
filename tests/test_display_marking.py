"""What the reviewer reads is what will run (issue 16.5): invisible characters and look-alike letters
in anything an agent supplies are shown visibly marked on every screen, and the detail page warns.

The attack: an agent proposes ``PUT /tickets/\u202e321/etelednimda\u202c``. Rendered raw, the
right-to-left override makes it read ``/tickets/admindelete/123`` (or, in a JSON body, something else
entirely); a reviewer approves what they did not read. Countersign stores it unchanged (that is what
runs) and shows ``⟨U+202E⟩`` wherever it appears.
"""

from __future__ import annotations

import json

import pytest
from django.core import mail
from django.template import Context, Template
from django.test import Client, override_settings

from approvals import display, services
from approvals.credentials import create_credential
from approvals.diffs import Segment, text_diff
from approvals.models import ActionRequest, Review
from tests.conftest import CLI, propose_body
from tests.slack_helpers import deliver_due

pytestmark = pytest.mark.django_db

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


# --- the module -----------------------------------------------------------------------------------


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
    # Hypothesis in tests/test_slack_limits.py). Marked once, the text stays marked when checked again.
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


# --- every screen -------------------------------------------------------------------------------


@pytest.fixture
def browser(reviewer):
    client = Client()
    client.force_login(reviewer)
    return client


@pytest.fixture
def readable_credential(target, db):
    """A credential whose target Countersign may read to compute the diff (preview reads allowed)."""
    return create_credential(
        name="tickets-api",
        kind="http_bearer",
        secret="tickets-token-0001",
        scope={"base_url": target.url},
        actor=CLI,
        allow_preview_reads=True,
    )


@pytest.fixture
def deceptive(agent_api, readable_credential, target):
    """The agent's proposal, through the API, with the deceptive path in the summary, parameters and body."""
    target.resources["/tickets/42"] = {"path": "/tickets/123", "status": "open"}
    body = propose_body(
        action_type="http.request",
        params={
            "credential": readable_credential.name,
            "method": "PUT",
            "path": "/tickets/42",
            "json": {"path": DECEPTIVE, "status": "open"},
            "query": {"note": DECEPTIVE},
        },
        summary=f"Tidy up {DECEPTIVE}",
        context={"reasoning": f"Ticket {DECEPTIVE} is stale.", "source": {"kind": "forum", "text": DECEPTIVE}},
        on_behalf_of=f"ivan{RLO}@example.com",
    )
    response = agent_api.post("/api/v1/actions", body, format="json")
    assert response.status_code == 201, response.content
    action = ActionRequest.objects.get(id=response.json()["id"])
    ActionRequest.objects.filter(id=action.id).update(risk="high")  # the confirmation dialog applies
    action.refresh_from_db()
    # Stored as sent: only the display changes.
    assert action.params["json"]["path"] == DECEPTIVE and action.summary == f"Tidy up {DECEPTIVE}"
    return action


def assert_marked(page: str, where: str) -> None:
    assert RLO not in page and PDF not in page, f"raw bidi control on {where}"
    assert "⟨U+202E⟩" in page, f"no marker on {where}"


def test_the_detail_page_marks_the_path_everywhere_and_warns(browser, deceptive):
    page = browser.get(f"/actions/{deceptive.id}").content.decode()
    assert_marked(page, "detail")
    head, _, _ = page.partition("</title>")
    assert "⟨U+202E⟩" in head  # the window title
    h1 = page.split("<h1>", 1)[1].split("</h1>", 1)[0]
    assert "⟨U+202E⟩" in h1
    params = page.split('id="params">', 1)[1].split("</pre>", 1)[0]
    assert params.count("⟨U+202E⟩") == 2 and "⟨U+202C⟩" in params
    preview = page.split('id="preview"', 1)[1].split("</section>", 1)[0]
    assert "⟨U+202E⟩" in preview  # the diff Countersign computed: the body's new path
    dialog = page.split('id="confirm-approve"', 1)[1].split("</dialog>", 1)[0]
    assert "⟨U+202E⟩" in dialog and 'id="confirm-approve-findings"' in dialog
    warning = page.split('id="display-warning"', 1)[1].split("</div>", 1)[0]
    assert "could not see or could misread" in warning
    assert "summary: invisible or control characters" in warning and "params.json.path" in warning
    # The edit box keeps the exact value, as JSON escapes a reviewer can see.
    box = page.split('id="approve-params"', 1)[1].split("</textarea>", 1)[0]
    assert "\\u202e321/etelednimda\\u202c" in box


def test_the_queue_row_the_live_panel_and_the_history_mark_it(browser, deceptive, reviewer):
    for url in ("/", f"/actions/{deceptive.id}/row"):
        page = browser.get(url).content.decode()
        assert_marked(page, url)
    services.reject_action(
        action_id=deceptive.id, reviewer=reviewer, via=Review.Via.WEB, reason=f"Not {DECEPTIVE}, thanks"
    )
    for url in ("/history", f"/actions/{deceptive.id}/live", f"/actions/{deceptive.id}"):
        page = browser.get(url).content.decode()
        assert_marked(page, url)


def test_the_audit_page_marks_it(client, admin_user, deceptive):
    client.force_login(admin_user)
    page = client.get(f"/audit?action={deceptive.id}").content.decode()
    assert_marked(page, "audit")


def test_a_reviewers_edit_is_shown_marked_in_the_edits_diff(browser, deceptive):
    edited = {**deceptive.params, "json": {"path": f"/tickets/{CYRILLIC_A}dmin", "status": "open"}}
    ActionRequest.objects.filter(id=deceptive.id).update(edited_params=edited)  # as an approval with edits stores it
    page = browser.get(f"/actions/{deceptive.id}/live").content.decode()
    assert "Approved with edits" in page
    assert_marked(page, "edits diff")
    assert "⟨Cyrillic" in page


def test_the_check_params_answer_marks_what_it_quotes(browser, deceptive):
    bad = json.dumps({**deceptive.params, f"x{RLO}": 1})
    answer = browser.post(f"/actions/{deceptive.id}/check-params", {"params": bad}).json()
    assert RLO not in json.dumps(answer, ensure_ascii=False)


def test_the_email_notification_marks_it_and_warns(agent):
    with override_settings(COUNTERSIGN_DEFAULT_NOTIFY=["email:reviewers@example.com"]):
        services.propose_action(
            agent=agent,
            proposal=services.Proposal(
                action_type="decision.only",
                params={"command": "delete", "path": DECEPTIVE},
                summary=f"Delete {DECEPTIVE}",
                on_behalf_of=f"ivan{RLO}",
            ),
        )
        deliver_due()
    [message] = mail.outbox
    assert RLO not in message.subject and "⟨U+202E⟩" in message.subject
    assert RLO not in message.body and f"Summary:     Delete {MARKED}" in message.body
    assert "could not see or could misread" in message.body and "params.path" in message.body


def test_the_dashboard_marks_a_failed_actions_summary_and_error(browser, deceptive):
    from django.utils import timezone

    ActionRequest.objects.filter(id=deceptive.id).update(
        status="failed", decided_at=timezone.now(), finished_at=timezone.now(), result={"error": f"404 {DECEPTIVE}"}
    )
    page = browser.get("/dashboard").content.decode()
    assert_marked(page, "dashboard")


def test_a_look_alike_channel_name_is_flagged_on_the_detail_page(browser, agent):
    action, _ = services.propose_action(
        agent=agent,
        proposal=services.Proposal(
            action_type="decision.only",
            params={"command": "invite", "channel": f"#prod-{CYRILLIC_A}dmins"},
            summary=f"Invite Ivan to #prod-{CYRILLIC_A}dmins",
        ),
    )
    page = browser.get(f"/actions/{action.id}").content.decode()
    h1 = page.split("<h1>", 1)[1].split("</h1>", 1)[0]
    assert f"⟨Cyrillic {CYRILLIC_A} U+0430⟩" in h1 and 'class="homoglyph"' in h1
    warning = page.split('id="display-warning"', 1)[1].split("</div>", 1)[0]
    assert "params.channel: a name mixes Latin with Cyrillic letters" in warning
    assert "summary: a name mixes Latin with Cyrillic letters" in warning
