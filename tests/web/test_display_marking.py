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
from django.test import Client, override_settings

from approvals import services
from approvals.models import ActionRequest, Review
from approvals.services.credentials import create_credential
from tests import factories
from tests.conftest import CLI, propose_body
from tests.support.slack_helpers import deliver_due
from tests.unit.test_display_marks import CYRILLIC_A, DECEPTIVE, MARKED, PDF, RLO

pytestmark = pytest.mark.django_db

# The module's own rules (every character, the look-alikes, the filters) are in tests/unit/test_display_marks.py.


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
        factories.propose(
            agent,
            "decision.only",
            {"command": "delete", "path": DECEPTIVE},
            summary=f"Delete {DECEPTIVE}",
            on_behalf_of=f"ivan{RLO}",
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
    action = factories.propose(
        agent,
        "decision.only",
        {"command": "invite", "channel": f"#prod-{CYRILLIC_A}dmins"},
        summary=f"Invite Ivan to #prod-{CYRILLIC_A}dmins",
    )
    page = browser.get(f"/actions/{action.id}").content.decode()
    h1 = page.split("<h1>", 1)[1].split("</h1>", 1)[0]
    assert f"⟨Cyrillic {CYRILLIC_A} U+0430⟩" in h1 and 'class="homoglyph"' in h1
    warning = page.split('id="display-warning"', 1)[1].split("</div>", 1)[0]
    assert "params.channel: a name mixes Latin with Cyrillic letters" in warning
    assert "summary: a name mixes Latin with Cyrillic letters" in warning
