"""Evidence frozen at decision time (issue 20, point 2): what each reviewer was shown is stored with the decision,
its digest is in the audit event, and a decided action shows what was approved, then what ran, then the
original proposal, with each review's evidence, however the target changed since."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from approvals import services
from approvals.models import ActionStatus, Review
from approvals.presentation.previews import fingerprint, preview_from_dict
from audit.canonical import digest
from audit.models import AuditEvent
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def desk(reviewer):
    client = Client()
    client.force_login(reviewer)
    return client


def propose_put(agent, credential, body):
    return factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "PUT", "path": "/plans/acme", "json": body},
        summary="Set Acme's plan to 40 seats",
    )


def fingerprint_on(page: str) -> str:
    return re.search(r'id="preview"[^>]*data-fingerprint="([0-9a-f]{64})"', page).group(1)


def test_a_decided_action_shows_what_was_approved_then_what_ran_then_the_proposal(agent, credential, target, desk):
    target.resources["/plans/acme"] = {"plan": "team", "seats": 30}
    action = propose_put(agent, credential, {"plan": "team", "seats": 40})
    shown = desk.get(f"/actions/{action.id}").content.decode()
    assert '<p class="describe" id="describe">PUT to /plans/acme: replaces the resource with the body</p>' in shown

    response = desk.post(
        f"/actions/{action.id}/approve",
        {
            "preview_fingerprint": fingerprint_on(shown),
            "params": '{"credential": "internal-api", "method": "PUT", "path": "/plans/acme", '
            '"json": {"plan": "team", "seats": 35}}',
        },
    )
    assert response.status_code == 302
    assert services.execute_action(action.id) == ActionStatus.SUCCEEDED
    # Months later the target looks different; the page still shows what the reviewer saw and approved.
    target.resources["/plans/acme"] = {"plan": "enterprise", "seats": 500}

    page = desk.get(f"/actions/{action.id}").content.decode()
    approved, ran, proposal = (page.index(marker) for marker in ('id="approved-h"', 'id="ran-h"', 'id="params-h"'))
    assert approved < ran < proposal
    approved_part = page[approved:ran]
    # What ran is the reviewer's 35, shown as an edit of the agent's 40.
    assert "Approved with edits" in approved_part and "params.json.seats" in approved_part
    assert re.search(r"<code>params.json.seats</code>.*?>40</pre>.*?>35</pre>", approved_part, re.S)
    assert "It ran and succeeded." in page[ran:proposal]
    assert "The original proposal" in page[proposal:]
    evidence = page[page.index('id="evidence-h"') : proposal]
    assert "<summary>What rita was shown</summary>" in evidence
    # The target as it was when rita decided (30 seats, to become 40; her edit made it 35), not as it is now.
    assert re.search(r"<code>seats</code>.*?>30</pre>.*?>40</pre>", evidence, re.S)
    assert re.search(r"<h3>The preview of what they approved</h3>.*?>30</pre>.*?>35</pre>", evidence, re.S)
    assert "500" not in evidence and "enterprise" not in evidence


def test_the_stored_evidence_is_what_the_page_showed_and_its_digest_is_audited(agent, credential, target, desk):
    target.resources["/plans/acme"] = {"plan": "team", "seats": 30}
    action = propose_put(agent, credential, {"plan": "team", "seats": 40})
    seen = fingerprint_on(desk.get(f"/actions/{action.id}").content.decode())

    desk.post(f"/actions/{action.id}/approve", {"preview_fingerprint": seen, "comment": "ok"})

    review = Review.objects.get(action=action)
    assert review.evidence["fingerprint"] == seen
    assert review.evidence["fingerprint_checked"] is True
    assert fingerprint(preview_from_dict(review.evidence["preview"])) == seen
    assert review.evidence["preview"]["before"] == {"plan": "team", "seats": 30}
    assert review.evidence["describe"] == "PUT to /plans/acme: replaces the resource with the body"
    event = AuditEvent.objects.get(action_id=action.id, verb="action.reviewed")
    assert event.data["evidence_digest"] == digest(review.evidence)


def test_a_rejection_keeps_its_evidence_too(agent, credential, target, desk):
    target.resources["/plans/acme"] = {"plan": "team", "seats": 30}
    action = propose_put(agent, credential, {"plan": "team", "seats": 40})
    desk.post(f"/actions/{action.id}/reject", {"reason": "Acme asked for 35"})

    review = Review.objects.get(action=action)
    assert review.evidence["preview"]["before"] == {"plan": "team", "seats": 30}
    event = AuditEvent.objects.get(action_id=action.id, verb="action.rejected")
    assert event.data["evidence_digest"] == digest(review.evidence)
    page = desk.get(f"/actions/{action.id}").content.decode()
    assert page.index('id="outcome-h"') < page.index('id="evidence-h"') < page.index('id="params-h"')
    assert "Nothing ran." in page


def test_an_old_fingerprint_is_refused_and_nothing_is_stored(agent, credential, target, desk):
    target.resources["/plans/acme"] = {"plan": "team", "seats": 30}
    action = propose_put(agent, credential, {"plan": "team", "seats": 40})
    old = fingerprint_on(desk.get(f"/actions/{action.id}").content.decode())
    target.resources["/plans/acme"] = {"plan": "team", "seats": 60}  # someone changed it meanwhile

    response = desk.post(f"/actions/{action.id}/approve", {"preview_fingerprint": old}, follow=True)

    assert "The target changed since you reviewed it" in response.content.decode()
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING
    assert not Review.objects.filter(action=action).exists()
    assert not AuditEvent.objects.filter(action_id=action.id, verb="action.reviewed").exists()
    # The page now shows the fresh state, whose fingerprint is accepted.
    fresh = fingerprint_on(response.content.decode())
    assert fresh != old
    desk.post(f"/actions/{action.id}/approve", {"preview_fingerprint": fresh})
    assert Review.objects.get(action=action).evidence["preview"]["before"] == {"plan": "team", "seats": 60}
