# ruff: noqa: F811 - pytest fixtures come from tests/access/desk_support
"""The reviewer desk for time-boxed access (issue 23): the Active access page, the duration on the detail page and
shortening it when approving, End early (staff), Undo, the revert linked both ways, the alert while a revert is
failing, and the dashboard's counts. Real SCIM server, real services; the clock is moved, never slept."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals.models import AccessLease, ActionRequest, ActionStatus, Review
from audit.models import AuditEvent
from tests.access.desk_support import (
    approve_by,
    execute,
    grant_params,
    granted,
    idp,  # noqa: F401 - fixture
    propose_grant,
    requester,  # noqa: F401 - fixture
    revert_of,
    run_due_reverts,
    scim,  # noqa: F401 - fixture
    staff,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(response) -> str:
    """The page's words, tags dropped and spaces folded (for "does the page say …")."""
    html = response.content.decode()
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def lease(action) -> AccessLease:
    return AccessLease.objects.get(action=action)


# --- the Active access page ---------------------------------------------------------------------------------


def test_active_access_lists_who_has_what_granted_by_whom_until_when_with_a_countdown(
    idp, scim, reviewer, second_reviewer, staff
):
    action = granted(idp, [reviewer, second_reviewer])
    assert scim.members(scim.group_id) == {"alice", "bob"}

    page = signed_in(reviewer).get("/access")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/access"' in html and ">Active access</a>" in html  # in the top navigation
    row = html[html.index(f'id="access-{action.id}"') :]
    row = row[: row.index("</tr>")]
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row))
    assert "alice" in words and "engineering" in words and "for ann.lee" in words  # who, what, for whom
    assert "rita, sam" in words  # granted by
    until = lease(action).expires_at
    assert f'datetime="{until.isoformat()}"' in row  # until when
    left = int(re.search(r'data-seconds-left="(\d+)"', row).group(1))
    assert 7000 < left <= 7200  # the countdown starts from the server's count: two hours
    assert "End early" not in row  # a reviewer who is not staff sees no button …
    assert "End early" in signed_in(staff).get("/access").content.decode()  # … staff do


def test_the_page_shows_only_grants_the_reviewer_may_see(idp, reviewer, second_reviewer, outsider):
    granted(idp, [reviewer, second_reviewer])
    assert "Nobody holds time-boxed access right now." in text(signed_in(outsider).get("/access"))


# --- the detail page: the duration, shortening it -------------------------------------------------------------


def test_the_detail_page_shows_the_duration_prominently(idp, reviewer):
    action = propose_grant(idp, duration="PT2H")
    words = text(signed_in(reviewer).get(f"/actions/{action.id}"))
    assert "Time-boxed access for 2 h ; Countersign takes it back by itself" in words.replace("2 h;", "2 h ;")
    assert "Grant it for less time" in words and "Approve for this long" in words


def approve_shortened(client, action, amount, unit="minutes", **extra):
    return client.post(
        f"/actions/{action.id}/approve-shortened",
        {
            "shorten_amount": amount,
            "shorten_unit": unit,
            "params": json.dumps(action.params),
            "confirm_risk": "yes",
            **extra,
        },
    )


def test_a_reviewer_shortens_the_duration_when_approving_and_the_grant_ends_sooner(
    idp, scim, reviewer, second_reviewer
):
    action = propose_grant(idp, duration="PT2H")
    response = approve_shortened(signed_in(reviewer), action, "30")
    assert response.status_code == 302
    action.refresh_from_db()
    assert action.edited_params == {**action.params, "duration": "PT30M"}
    assert action.reviews.get().reviewer == reviewer  # the approval counts: it is an edit, then an approval
    words = text(signed_in(second_reviewer).get(f"/actions/{action.id}"))
    assert "access for 30 min (shortened by a reviewer from 2 h)" in words

    from approvals import services

    services.approve_action(action_id=action.id, reviewer=second_reviewer, via=Review.Via.WEB)
    action = execute(ActionRequest.objects.get(id=action.id))
    held = lease(action)
    assert held.expires_at - held.granted_at == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("amount", "unit", "why"),
    [
        ("3", "hours", "never lengthen"),  # longer than asked
        ("1", "days", "never lengthen"),
        ("0", "minutes", "longer than zero"),
        ("-5", "minutes", "whole number"),
        ("1e3", "minutes", "whole number"),
        ("٣", "minutes", "whole number"),  # an Arabic-Indic three: a digit to Python, not to the form
        ("30", "weeks", "minutes, hours or days"),
    ],
)
def test_a_longer_or_malformed_duration_is_refused_and_nothing_is_recorded(idp, reviewer, amount, unit, why):
    action = propose_grant(idp, duration="PT2H")
    client = signed_in(reviewer)
    response = approve_shortened(client, action, amount, unit)
    assert response.status_code == 302
    page = text(client.get(f"/actions/{action.id}"))
    assert why in page
    action.refresh_from_db()
    assert action.status == ActionStatus.PENDING and action.edited_params is None
    assert not action.reviews.exists()


def test_lengthening_through_the_raw_edit_is_refused_too(idp, reviewer):
    action = propose_grant(idp, duration="PT2H")
    client = signed_in(reviewer)
    for longer in ("PT3H", 86400, "P1D"):
        client.post(
            f"/actions/{action.id}/approve",
            {"params": json.dumps(grant_params(longer)), "confirm_risk": "yes"},
        )
        action.refresh_from_db()
        assert action.edited_params is None and not action.reviews.exists(), longer
    assert "never lengthen" in text(client.get(f"/actions/{action.id}"))


# --- End early ---------------------------------------------------------------------------------------------


def test_staff_end_access_early_from_the_detail_page_and_the_revert_is_linked_both_ways(
    idp, scim, reviewer, second_reviewer, staff
):
    action = granted(idp, [reviewer, second_reviewer])
    page = signed_in(staff).get(f"/actions/{action.id}")
    assert 'id="end-access"' in page.content.decode()

    response = signed_in(staff).post(f"/actions/{action.id}/end-access", {"reason": "task finished"})
    assert response.status_code == 302 and response["Location"] == f"/actions/{action.id}"
    assert lease(action).state == AccessLease.State.REVERTING
    revert = revert_of(action)
    assert revert.reverts_id == action.id and revert.revert_reason == "ended_early"
    ended = AuditEvent.objects.get(action_id=action.id, verb="access.end_requested")
    assert (ended.actor, ended.via, ended.data["reason"]) == ("stella", "web", "task finished")

    execute(revert)
    assert scim.members(scim.group_id) == {"bob"}  # alice's access is gone; bob, a member before, stays
    original_page = signed_in(reviewer).get(f"/actions/{action.id}").content.decode()
    assert f'href="/actions/{revert.id}"' in original_page  # the original links to its revert …
    assert "Taken back" in original_page and "ended early by stella" in original_page
    revert_page = signed_in(reviewer).get(f"/actions/{revert.id}").content.decode()
    assert f'href="/actions/{action.id}"' in revert_page  # … and the revert to the original
    timeline = revert_page[revert_page.index('class="timeline"') :]
    assert f'href="/actions/{action.id}"' in timeline
    original_timeline = original_page[original_page.index('class="timeline"') :]
    assert f'href="/actions/{revert.id}"' in original_timeline


def test_a_reviewer_who_is_not_staff_cannot_end_access_early_and_is_audited(idp, reviewer, second_reviewer):
    action = granted(idp, [reviewer, second_reviewer])
    for path in (f"/actions/{action.id}/end-access", f"/actions/{action.id}/undo"):  # Undo here is End early
        response = signed_in(reviewer).post(path)
        assert response.status_code == 403
    refused = AuditEvent.objects.filter(verb="access.refused", actor="rita")
    assert refused.exists() and refused.first().data["path"].endswith("/end-access")
    assert lease(action).state == AccessLease.State.ACTIVE  # nothing half-written
    assert not ActionRequest.objects.filter(reverts=action).exists()
    assert not AuditEvent.objects.filter(action_id=action.id, verb="access.end_requested").exists()


def test_ending_twice_is_refused_audited_and_starts_one_revert(idp, reviewer, second_reviewer, staff):
    action = granted(idp, [reviewer, second_reviewer])
    client = signed_in(staff)
    client.post(f"/actions/{action.id}/end-access")
    client.post(f"/actions/{action.id}/end-access", {"next": "access"})
    assert ActionRequest.objects.filter(reverts=action).count() == 1
    assert AuditEvent.objects.filter(action_id=action.id, verb="access.end_requested").count() == 1
    refused = AuditEvent.objects.get(action_id=action.id, verb="access.end_refused")
    assert refused.actor == "stella" and "no longer active" in refused.data["detail"]
    assert "The access was not ended" in text(client.get("/access"))


def test_ending_an_action_that_granted_no_time_boxed_access_is_refused(idp, reviewer, second_reviewer, staff):
    action = execute(approve_by(propose_grant(idp, duration=None), reviewer, second_reviewer))
    assert action.status == ActionStatus.SUCCEEDED
    response = signed_in(staff).post(f"/actions/{action.id}/end-access")
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action_id=action.id, verb="access.end_refused").exists()
    assert not AccessLease.objects.filter(action=action).exists()
    assert not ActionRequest.objects.filter(reverts=action).exists()


# --- Undo --------------------------------------------------------------------------------------------------


def test_undo_proposes_the_reverse_as_a_new_action_through_the_normal_policies(idp, scim, reviewer, second_reviewer):
    action = execute(approve_by(propose_grant(idp, duration=None), reviewer, second_reviewer))
    assert action.status == ActionStatus.SUCCEEDED and scim.members(scim.group_id) == {"alice", "bob"}
    client = signed_in(reviewer)
    assert 'id="undo"' in client.get(f"/actions/{action.id}").content.decode()

    response = client.post(f"/actions/{action.id}/undo")
    undo = ActionRequest.objects.get(reverts=action)
    assert response["Location"] == f"/actions/{undo.id}"
    assert undo.status == ActionStatus.PENDING and undo.revert_reason == "undo"  # it needs approvals like any
    assert undo.effective_params["remove"] == ["alice"]
    assert scim.members(scim.group_id) == {"alice", "bob"}  # nothing is taken back before it is approved
    assert f'href="/actions/{action.id}"' in client.get(f"/actions/{undo.id}").content.decode()

    client.post(f"/actions/{action.id}/undo")  # twice: refused, audited, one undo
    assert ActionRequest.objects.filter(reverts=action).count() == 1
    assert AuditEvent.objects.filter(action_id=action.id, verb="access.undo_refused").exists()


# --- a failing revert: the alert on every desk page, until it succeeds ----------------------------------------


def test_a_failing_revert_is_an_alert_on_every_desk_page_until_it_succeeds(idp, scim, reviewer, second_reviewer, staff):
    action = granted(idp, [reviewer, second_reviewer], duration="PT2M")
    client = signed_in(second_reviewer)
    assert 'id="access-alert"' not in client.get("/").content.decode()

    scim.down = True  # the target is down when the time is up
    AccessLease.objects.filter(action=action).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    run_due_reverts()
    assert lease(action).state == AccessLease.State.RETRYING
    for path in ("/", "/history", "/dashboard", "/access", f"/actions/{action.id}"):
        page = client.get(path).content.decode()
        assert 'id="access-alert"' in page, path
        assert "could not be taken back" in page and action.summary in page
    dashboard = client.get("/dashboard").content.decode()
    failing = dashboard[dashboard.index('id="stat-access-failing"') :]
    assert re.search(r'class="stat-value">1<', failing)
    assert "Taking the access back failed" in client.get(f"/actions/{action.id}").content.decode()

    scim.down = False  # back up; the clock reaches the retry
    AccessLease.objects.filter(action=action).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    run_due_reverts()
    assert lease(action).state == AccessLease.State.REVERTED
    assert scim.members(scim.group_id) == {"bob"}
    assert 'id="access-alert"' not in client.get("/").content.decode()


def test_the_dashboard_counts_active_and_expired_grants(idp, scim, reviewer, second_reviewer):
    first = granted(idp, [reviewer, second_reviewer], duration="PT2M")
    granted(idp, [reviewer, second_reviewer], duration="PT2H", add=("carol",))
    client = signed_in(reviewer)

    def stat(name):
        page = client.get("/dashboard").content.decode()
        return int(re.search(rf'id="stat-access-{name}".*?class="stat-value">(\d+)<', page, re.S).group(1))

    assert (stat("active"), stat("expired"), stat("failing")) == (2, 0, 0)
    AccessLease.objects.filter(action=first).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    run_due_reverts()
    assert (stat("active"), stat("expired"), stat("failing")) == (1, 1, 0)


def test_other_doors_to_the_same_buttons_are_refused(idp, reviewer, second_reviewer, staff, outsider):
    action = granted(idp, [reviewer, second_reviewer])
    assert signed_in(staff).get(f"/actions/{action.id}/end-access").status_code == 405  # a link cannot end it
    assert Client().post(f"/actions/{action.id}/end-access").status_code == 302  # signed out: to the log-in
    pending = propose_grant(idp, duration="PT2H", add=("carol",))
    response = approve_shortened(signed_in(outsider), pending, "30")  # not a reviewer of it: as any hidden decision
    assert response.status_code == 404
    pending.refresh_from_db()
    assert pending.edited_params is None and not pending.reviews.exists()
    assert AuditEvent.objects.filter(action_id=pending.id, verb="decision.refused", actor="oscar").exists()
    assert lease(action).state == AccessLease.State.ACTIVE
