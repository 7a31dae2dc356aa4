"""Every built-in action type says in plain words what it will do (issue 20, point 4), and the desk shows it:
under the title, and atop the preview instead of "reads or creates without changing" for types with nothing
to read."""

from __future__ import annotations

import pytest
from django.test import Client

from agents.services import grant_capability
from catalog import registry
from tests import factories
from tests.conftest import CLI


def describe(action_type: str, params: dict) -> str:
    return registry.get(action_type).describe(params)


def test_decision_only_reads_its_free_params_as_a_sentence():
    refund = {"action": "refund", "amount": 249, "currency": "EUR", "order_id": "88213"}
    assert describe("decision.only", refund) == "Refund €249.00 to order #88213"
    assert (
        describe("decision.only", {"amount_cents": 1999, "currency": "usd", "invoice": "#7"}) == "$19.99 for invoice #7"
    )
    assert describe("decision.only", {"command": "restart", "service": "billing"}) == "Restart billing"
    # What the sentence does not say is listed, so an edit (35 seats, not 40) shows in the words.
    assert describe("decision.only", {"action": "set_seats", "seats": 35, "account": "acme"}) == (
        "Set seats account acme (seats: 35)"
    )
    assert (
        describe("decision.only", {"seats": 35, "plan": "team"})
        == "The agent acts after approval with seats: 35; plan: team"
    )
    assert describe("decision.only", {}) == "The agent acts itself after approval; Countersign runs nothing"


def test_each_type_says_what_it_will_do():
    question = "Which region should the new cluster run in: eu-west-1 or eu-central-1? " * 3
    assert describe("human.question", {"question": question}).startswith("Ask: Which region should the new cluster")
    assert len(describe("human.question", {"question": question})) <= 125
    assert describe("http.request", {"credential": "c", "method": "POST", "path": "/tickets"}) == (
        "POST to /tickets: creates a resource (or triggers an operation)"
    )
    assert describe("http.request", {"credential": "c", "method": "DELETE", "path": "/users/7"}) == (
        "DELETE to /users/7: deletes the resource"
    )
    scim = {"credential": "idp", "group": "engineering-admins", "add": ["dana"], "remove": ["bob", "erin"]}
    assert describe("scim.group_membership", scim) == (
        "Add dana to engineering-admins; remove bob and erin from engineering-admins"
    )
    email = {"to": ["a@x.example", "b@x.example", "c@x.example"], "subject": "Q3 numbers", "body": "…"}
    assert describe("email.send", email) == "Send 'Q3 numbers' to a@x.example, b@x.example and 1 more"
    assert describe("slack.post_message", {"credential": "bot", "channel": "#ops", "text": "hi"}) == "Post to #ops"
    assert describe("slack.post_message", {"channel": "C0123ABCD", "text": "hi", "thread_ts": "1.2"}) == (
        "Post to C0123ABCD as a reply in a thread"
    )
    file = {"path": "etc/nginx/site.conf", "content": "a\nb\nc\n", "mode": "replace"}
    assert describe("file.write", file) == "Write 3 lines to etc/nginx/site.conf (replacing it)"
    assert describe("file.write", {"path": "x.txt", "content": "one", "mode": "create"}) == (
        "Write 1 line to x.txt (a new file)"
    )


def test_every_installed_type_describes_itself_without_reading_anything():
    # Half-filled params (an edit in progress) still give words, never an exception.
    for action_type in registry.all_types():
        assert isinstance(action_type.describe({}), str) and action_type.describe({})


@pytest.mark.django_db
def test_the_page_says_what_a_refund_and_a_question_will_do_instead_of_nothing_to_compare(agent, reviewer):
    grant_capability(agent=agent, action_type="human.question", actor=CLI)
    client = Client()
    client.force_login(reviewer)
    refund = factories.propose(
        agent,
        "decision.only",
        {"action": "refund", "amount": "249.00", "currency": "EUR", "order_id": "88213"},
        summary="Refund the damaged order",
    )
    page = client.get(f"/actions/{refund.id}").content.decode()
    assert '<p class="describe" id="describe">Refund €249.00 to order #88213</p>' in page
    assert '<p class="preview-says" id="preview-says">Refund €249.00 to order #88213</p>' in page
    assert "reads or creates without changing" not in page
    assert "Countersign runs nothing" in page

    asked = factories.propose(
        agent, "human.question", {"question": "Which region should the cluster run in?"}, summary="Region?"
    )
    page = client.get(f"/actions/{asked.id}").content.decode()
    assert "Ask: Which region should the cluster run in?" in page
    # The question itself, in full, where the reviewer reads the preview (not only inside the JSON block).
    assert '<blockquote class="question" id="question">Which region should the cluster run in?</blockquote>' in page
