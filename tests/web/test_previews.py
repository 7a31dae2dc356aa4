"""Previews computed from the live target, the diffs reviewers read, the stale-preview guard, and
escaping of everything an agent supplies."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from approvals import services
from approvals.models import ActionRequest, ActionStatus, Review
from approvals.presentation.previews import compute_preview, fingerprint
from approvals.services.credentials import create_credential
from tests import factories
from tests.api.test_api import assert_problem
from tests.conftest import CLI, TARGET_SECRET
from tests.support.servers import RecordingServer

pytestmark = pytest.mark.django_db


def propose_put(agent, credential, path="/users/7", body=None, **extra):
    return factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "PUT", "path": path, "json": body or {}},
        summary=extra.pop("summary", "Update user 7"),
        **extra,
    )


@pytest.fixture
def browser(reviewer):
    client = Client()
    client.force_login(reviewer)
    return client


def fingerprint_on(page: str) -> str:
    return re.search(r'id="preview"[^>]*data-fingerprint="([0-9a-f]{64})"', page).group(1)


# --- previews from the real target ---------------------------------------------------------


def test_put_preview_diffs_the_live_resource_against_the_proposal(agent, credential, target, browser):
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff"]}
    action = propose_put(agent, credential, body={"name": "Ann", "groups": ["staff", "admin"]})

    preview = compute_preview(action.action_type, action.params)
    assert (preview.kind, preview.before) == ("json", {"name": "Ann", "groups": ["staff"]})
    assert [r.method for r in target.requests] == ["GET"]  # read only: nothing was changed

    page = browser.get(f"/actions/{action.id}").content.decode()
    assert "What it will change" in page
    assert "groups[1]" in page and "added" in page and "&quot;admin&quot;" in page


def test_a_changed_target_refuses_the_approval_and_shows_the_fresh_diff(agent, credential, target, browser):
    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff"]}
    action = propose_put(agent, credential, body={"name": "Ann", "groups": ["staff", "admin"]})
    page = browser.get(f"/actions/{action.id}").content.decode()
    seen = fingerprint_on(page)

    target.resources["/users/7"] = {"name": "Ann", "groups": ["staff", "ops"]}  # someone else changed it
    response = browser.post(f"/actions/{action.id}/approve", {"preview_fingerprint": seen}, follow=True)
    page = response.content.decode()
    assert "The target changed since you reviewed it" in page
    assert "&quot;ops&quot;" in page  # the fresh state is what the page now shows
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.PENDING

    response = browser.post(f"/actions/{action.id}/approve", {"preview_fingerprint": fingerprint_on(page)})
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.APPROVED


def test_the_api_refuses_a_stale_fingerprint_with_the_fresh_preview(agent, credential, target, reviewer_api):
    target.resources["/users/7"] = {"name": "Ann"}
    action = propose_put(agent, credential, body={"name": "Bob"})
    seen = reviewer_api.get(f"/api/v1/actions/{action.id}/preview").json()
    assert seen["kind"] == "json" and seen["before"] == {"name": "Ann"} and seen["after"] == {"name": "Bob"}

    target.resources["/users/7"] = {"name": "Cat"}
    response = reviewer_api.post(
        f"/api/v1/actions/{action.id}/approve", {"preview_fingerprint": seen["fingerprint"]}, format="json"
    )
    body = assert_problem(response, 409)
    assert body["preview"]["before"] == {"name": "Cat"}
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.PENDING

    response = reviewer_api.post(
        f"/api/v1/actions/{action.id}/approve", {"preview_fingerprint": body["preview"]["fingerprint"]}, format="json"
    )
    assert response.status_code == 200


def test_agents_cannot_read_previews(agent_api, agent, credential):
    action = propose_put(agent, credential)
    assert_problem(agent_api.get(f"/api/v1/actions/{action.id}/preview"), 403)


def test_an_unreachable_target_shows_preview_unavailable_and_rejection_still_works(agent, browser, owner):
    dead = RecordingServer().start()
    url = dead.url
    dead.stop()  # nothing listens there now
    credential = create_credential(
        name="dead-api",
        kind="http_bearer",
        secret=TARGET_SECRET,
        scope={"base_url": url},
        actor=CLI,
        allow_preview_reads=True,
    )
    action = propose_put(agent, credential)
    page = browser.get(f"/actions/{action.id}").content.decode()
    assert "Preview unavailable: could not read the current resource" in page
    browser.post(f"/actions/{action.id}/reject", {"reason": "cannot verify it"})
    assert ActionRequest.objects.get(id=action.id).status == ActionStatus.REJECTED


def test_a_preview_never_fetches_outside_the_credentials_base_url(agent, credential, target):
    elsewhere = RecordingServer().start()
    try:
        action = propose_put(agent, credential)
        # Forged in the database: the API would have refused this path.
        ActionRequest.objects.filter(id=action.id).update(
            params={**action.params, "path": f"//127.0.0.1:{elsewhere.port}/steal"}
        )
        action.refresh_from_db()
        preview = compute_preview(action.action_type, action.params)
        assert preview.kind == "unavailable"
        assert elsewhere.requests == [] and target.requests == []
    finally:
        elsewhere.stop()


def test_previews_never_show_the_secret(agent, credential, target):
    target.resources["/users/7"] = lambda request: {"token": request.headers["Authorization"]}
    action = propose_put(agent, credential, body={"token": "x"})
    preview = compute_preview(action.action_type, action.params)
    assert TARGET_SECRET not in str(preview.before) and "[redacted]" in str(preview.before)


def test_a_read_only_request_has_nothing_to_diff(agent, credential, browser):
    action = factories.propose(
        agent,
        "http.request",
        {"credential": credential.name, "method": "GET", "path": "/status"},
        summary="Read status",
    )
    assert "Nothing to compare" in browser.get(f"/actions/{action.id}").content.decode()


def test_reviewer_edits_are_shown_as_a_diff_against_the_proposal(agent, credential, reviewer, browser):
    action = propose_put(agent, credential, body={"name": "Bob"})
    edited = {**action.params, "json": {"name": "Bobby"}}
    services.approve_action(action_id=action.id, reviewer=reviewer, via=Review.Via.WEB, edited_params=edited)
    page = browser.get(f"/actions/{action.id}").content.decode()
    assert "Approved with edits" in page
    assert "params.json.name" in page and "&quot;Bob&quot;" in page and "&quot;Bobby&quot;" in page


# --- hostile agent input ----------------------------------------------------------------------

HOSTILE = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "javascript:window.__pwned=1",
    "\u202egnp.exe",
    '"><svg onload=window.__pwned=1>',
]


def test_every_agent_supplied_string_is_escaped(agent, credential, target, browser):
    target.resources["/users/7"] = {"bio": HOSTILE[1]}
    action = propose_put(
        agent,
        credential,
        body={"bio": HOSTILE[0], "site": HOSTILE[2]},
        summary=HOSTILE[4][:200],
        context={
            "reasoning": HOSTILE[1],
            "source": {"kind": HOSTILE[0], "url": HOSTILE[2], "text": HOSTILE[3]},
            "links": [HOSTILE[2], HOSTILE[4]],
            "extra": HOSTILE[0],
        },
        on_behalf_of=HOSTILE[4][:100],
    )
    for url in ("/", f"/actions/{action.id}", f"/actions/{action.id}/live", f"/actions/{action.id}/row"):
        page = browser.get(url).content.decode()
        for raw in ("<script>window", "<img src=x", "<svg onload", 'href="javascript:'):
            assert raw not in page, (url, raw)
    page = browser.get(f"/actions/{action.id}").content.decode()
    assert html.escape("<script>window.__pwned=1</script>", quote=False) in page


# --- the diff engine ---------------------------------------------------------------------------


def test_fingerprint_follows_the_target_state_not_the_proposal():
    from catalog.base import Preview

    a = Preview(kind="json", before={"x": 1}, after={"x": 2})
    b = Preview(kind="json", before={"x": 1}, after={"x": 3})
    c = Preview(kind="json", before={"x": 9}, after={"x": 2})
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
