"""Context that is useful (issue 20, point 8): links are safe links with their host, the agent's run at the
top, similar past actions, and "make this a rule" opening the policy page prefilled with the simulator's verdict.
(Reasoning that expands, in a real browser: tests/web/test_diffs_browser.py.)"""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from approvals import services
from approvals.models import Review
from tests import factories

pytestmark = pytest.mark.django_db


def page_of(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def rita(reviewer):
    client = Client()
    client.force_login(reviewer)
    return client


def test_links_are_links_with_their_host_and_anything_else_stays_text(agent, rita):
    action = factories.propose(
        agent,
        summary="Restart billing",
        context={
            "reasoning": "See https://status.example.com/incidents/42, then restart.",
            "source": {"kind": "ticket", "url": "https://tickets.example.org/T-9"},
            "links": ["javascript:alert(document.cookie)", "https://wiki.example.net/runbook", "<b>x</b>"],
        },
        trace_url="https://traces.example/run/7f3a",
        run_id="run-7f3a",
        confidence=0.82,
    )
    page = page_of(rita, f"/actions/{action.id}")
    anchors = re.findall(
        r"<a class=\"ext-link\" href=\"([^\"]+)\" target=\"_blank\" rel=\"noopener noreferrer\">", page
    )
    assert anchors == [
        "https://traces.example/run/7f3a",
        "https://status.example.com/incidents/42",
        "https://tickets.example.org/T-9",
        "https://wiki.example.net/runbook",
    ]
    assert '<span class="link-host">(wiki.example.net)</span>' in page
    # The javascript: URL and the markup are shown as text, escaped, never as a link or an element.
    assert 'href="javascript' not in page.lower()
    assert '<li class="url">javascript:alert(document.cookie)</li>' in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    # The agent's run, at the top of the page (in the header, before the context card).
    top = page[page.index('class="detail-head') : page.index('class="card context"')]
    assert 'id="run-id">run-7f3a<' in top and 'id="confidence">82%<' in top and "traces.example" in top


def test_similar_past_actions_and_make_this_a_rule(agent, reviewer, second_reviewer, rita):
    past = [factories.propose(agent, summary=f"Restart billing {i}") for i in range(4)]
    for action in past[:2]:
        services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    services.reject_action(action_id=past[2].id, reviewer=reviewer, via=Review.Via.WEB, reason="not now")
    services.approve_action(action_id=past[3].id, reviewer=second_reviewer, via=Review.Via.WEB)
    action = factories.propose(agent, summary="Restart billing again")

    page = page_of(rita, f"/actions/{action.id}")
    similar = html.unescape(re.search(r'<p class="similar" id="similar">(.*?)</p>', page, re.S).group(1))
    assert "You approved 2 of 3; 3 of 4 approved overall." in similar
    link = html.unescape(re.search(r'<a href="([^"]+)" id="make-rule">Make this a rule</a>', page).group(1))
    query = parse_qs(urlsplit(link).query)
    assert urlsplit(link).path == "/policies"
    assert query["agent"] == [agent.name] and query["action_type"] == ["decision.only"]

    policies = page_of(rita, link)
    draft = policies[policies.index('id="rule-draft"') :]
    assert f'id="draft-agent">{agent.name}<' in draft and 'id="draft-type">decision.only<' in draft
    effect = "allow" if action.risk == "low" else "require"
    assert f'id="draft-effect">{effect}<' in draft
    # The simulator ran on this action's own parameters and gives its verdict.
    assert 'id="sim-result"' in policies
    assert "&quot;service&quot;: &quot;billing&quot;" in policies
    assert 'id="draft-ask"' in policies  # a reviewer who is not staff is told who can add it


def test_a_low_risk_action_drafts_an_allow_rule_for_staff_in_the_rule_editor(agent, reviewer, rita):
    reviewer.is_staff = True
    reviewer.save()
    action = factories.propose(agent, summary="Restart billing")
    action.risk = "low"
    action.save(update_fields=["risk"])
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB)
    current = factories.propose(agent, summary="Restart billing again")
    current.risk = "low"
    current.save(update_fields=["risk"])

    page = page_of(rita, f"/actions/{current.id}")
    link = html.unescape(re.search(r'<a href="([^"]+)" id="make-rule">', page).group(1))
    policies = page_of(rita, link)
    assert 'id="draft-effect">allow<' in policies and 'id="draft-risk">low<' in policies
    editor = html.unescape(re.search(r'id="draft-create" href="([^"]+)"', policies).group(1))
    query = parse_qs(urlsplit(editor).query)
    assert urlsplit(editor).path == "/admin/approvals/policyrule/add/"
    assert (query["agent"], query["action_type"], query["effect"], query["risks"]) == (
        [agent.name],
        ["decision.only"],
        ["allow"],
        ['["low"]'],
    )
