"""Claims, "assigned to me", and the queue's default order (issue 20, point 7).

A claim is a soft lock: everyone who may see the action sees who holds it, nobody is refused a decision
because of it, and it is audited. It never reveals an action outside the reviewer's groups.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from approvals import services
from approvals.errors import NotFound, NotPending
from approvals.models import ActionRequest, Review
from approvals.services import claims
from audit.models import AuditEvent
from tests.factories import UserFactory, propose

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def queue_summaries(html: str) -> list[str]:
    return re.findall(r'<td class="summary"><a href="[^"]+">([^<]+)</a>', html)


def test_a_claim_is_seen_by_everyone_audited_and_refuses_nobody(agent, reviewer, second_reviewer):
    action = propose(agent, summary="Restart billing")
    rita, sam = client_for(reviewer), client_for(second_reviewer)

    response = rita.post(f"/actions/{action.id}/claim", follow=True)
    assert "Claimed: the others see that you are working on it." in response.content.decode()
    assert "Assigned to you" in response.content.decode()
    assert "claimed by rita" in sam.get("/").content.decode()  # on the queue row
    assert "Claimed by <strong>rita</strong>" in sam.get(f"/actions/{action.id}").content.decode()
    claimed = AuditEvent.objects.get(action_id=action.id, verb="action.claimed")
    assert (claimed.actor, claimed.via, claimed.data) == ("rita", "web", {"from": ""})

    # Soft: sam takes it over (recorded with whom he took it from), then decides it; nothing refused him.
    sam.post(f"/actions/{action.id}/claim")
    assert AuditEvent.objects.filter(action_id=action.id, verb="action.claimed").last().data == {"from": "rita"}
    assert "claimed by sam" in rita.get("/").content.decode()
    services.approve_action(action_id=action.id, reviewer=second_reviewer, via=Review.Via.WEB)
    with pytest.raises(NotPending):
        claims.claim_action(action_id=action.id, user=reviewer, via="web")


def test_release_and_assigned_to_me(agent, reviewer, second_reviewer):
    mine = propose(agent, summary="Mine to do")
    theirs = propose(agent, summary="Sam's to do")
    propose(agent, summary="Nobody's yet")
    claims.claim_action(action_id=mine.id, user=reviewer, via="web")
    claims.claim_action(action_id=theirs.id, user=second_reviewer, via="web")
    rita = client_for(reviewer)

    html = rita.get("/", {"mine": "1"}).content.decode()
    assert queue_summaries(html) == ["Mine to do"]
    assert 'id="f-mine" name="mine" value="1" checked' in html
    assert len(queue_summaries(rita.get("/").content.decode())) == 3

    rita.post(f"/actions/{mine.id}/release")
    assert ActionRequest.objects.get(id=mine.id).claimed_by is None
    assert AuditEvent.objects.get(action_id=mine.id, verb="action.released").data == {"from": "rita"}
    assert queue_summaries(rita.get("/", {"mine": "1"}).content.decode()) == []
    assert "Nothing matches these filters." in rita.get("/", {"mine": "1"}).content.decode()


def test_claiming_an_action_outside_your_groups_reveals_nothing_and_is_audited(agent, reviewer):
    action = propose(agent, summary="Reviewers only")
    finance = Group.objects.create(name="finance")
    stranger = UserFactory(username="frank", groups=[finance])
    frank = client_for(stranger)

    for path in (f"/actions/{action.id}/claim", f"/actions/{action.id}/release", f"/actions/{uuid.uuid4()}/claim"):
        assert frank.post(path).status_code == 404
    assert frank.get(f"/actions/{action.id}/claim").status_code == 405
    fresh = ActionRequest.objects.get(id=action.id)
    assert fresh.claimed_by is None and fresh.claimed_at is None
    refused = AuditEvent.objects.filter(verb="claim.refused", actor="frank")
    assert refused.filter(action_id=action.id).exists(), "the attempt on a real action is on its record"
    assert not AuditEvent.objects.filter(action_id=action.id, verb="action.claimed").exists()
    with pytest.raises(NotFound):
        claims.claim_action(action_id=action.id, user=stranger, via="api")
    assert "Reviewers only" not in frank.get("/", {"mine": "1"}).content.decode()


def test_the_queue_sorts_by_expiry_soonest_first_by_default(agent, reviewer):
    propose(agent, summary="Proposed first, expires soonest", expires_in=600)
    propose(agent, summary="Proposed last, expires last", expires_in=3600 * 8)
    rita = client_for(reviewer)
    html = rita.get("/").content.decode()
    assert queue_summaries(html) == ["Proposed first, expires soonest", "Proposed last, expires last"]
    assert '<option value="expiry" selected>Expiring soonest</option>' in html
    # The other sorts stay, a choice away.
    newest = rita.get("/", {"sort": "newest"}).content.decode()
    assert queue_summaries(newest) == ["Proposed last, expires last", "Proposed first, expires soonest"]
