"""Similar past actions: how this agent's proposals of this type were decided, by you and by everyone.

"You approved 14 of 15" is the evidence a reviewer needs before turning a habit into a policy rule
(templates/approvals/_context.html links to the policy editor prefilled). Only actions the reviewer
may read are counted, so the line never reveals another group's queue.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Q
from django.urls import reverse
from django.utils.text import slugify

from approvals.models import ActionRequest, Review
from approvals.selectors.actions import actions_for
from approvals.selectors.dashboard import APPROVED, DECIDED
from catalog.risk import Risk

# Decided by people or a rule: approved (whatever happened when it ran) or rejected, as the dashboard counts them.


@dataclass(frozen=True)
class SimilarActions:
    decided: int  # similar actions decided, overall
    approved: int
    you_decided: int  # of those, the ones this reviewer approved or rejected
    you_approved: int

    @property
    def any(self) -> bool:
        return self.decided > 0

    @property
    def sentence(self) -> str:
        """ "You approved 14 of 15; 20 of 22 approved overall." """
        overall = f"{self.approved} of {self.decided} approved overall"
        if not self.you_decided:
            return f"You decided none of them; {overall}."
        return f"You approved {self.you_approved} of {self.you_decided}; {overall}."


def similar_actions(user, action: ActionRequest) -> SimilarActions:
    """Decided actions of the same agent and type as ``action`` (not itself) that ``user`` may read."""
    similar = (
        actions_for(user)
        .filter(agent_id=action.agent_id, action_type=action.action_type, status__in=DECIDED)
        .exclude(id=action.id)
    )
    counts = similar.aggregate(
        decided=Count("id", distinct=True),
        approved=Count("id", filter=Q(status__in=APPROVED), distinct=True),
    )
    mine = Review.objects.filter(action__in=similar.values("id"), reviewer=user, withdrawn_at__isnull=True)
    you = mine.aggregate(
        decided=Count("action_id", distinct=True),
        approved=Count("action_id", filter=Q(verdict=Review.Verdict.APPROVE), distinct=True),
    )
    return SimilarActions(
        decided=counts["decided"] or 0,
        approved=counts["approved"] or 0,
        you_decided=you["decided"] or 0,
        you_approved=you["approved"] or 0,
    )


def rule_draft_url(action: ActionRequest) -> str:
    """The policy editor (/policies) prefilled with a rule for this agent and type, simulated on these params.

    The draft allows without review only when the action is low risk; anything riskier keeps one approval.
    The parameters are not in the URL (they can be large): the page reads them from ``from_action``.
    """
    query = {
        "agent": action.agent.name,
        "action_type": action.action_type,
        "on_behalf_of": action.on_behalf_of,
        "draft": "1",
        "effect": "allow" if action.risk == Risk.LOW else "require",
        "risk": action.risk,
        "from_action": str(action.id),
    }
    return f"{reverse('approvals:policies')}?{urlencode(query)}"


_EFFECTS = ("allow", "require", "deny")


def rule_draft(user, query) -> dict[str, Any] | None:
    """The rule "make this a rule" proposes, from the policy page's query (None without ``draft=1``).

    ``action`` is the action it came from when ``user`` may read it (its parameters feed the simulator).
    """
    if query.get("draft") != "1":
        return None
    agent, action_type = query.get("agent", ""), query.get("action_type", "")
    effect = query.get("effect", "")
    risk = query.get("risk", "")
    action = None
    try:
        action_id = uuid.UUID(query.get("from_action", ""))
    except ValueError:
        action_id = None
    if action_id is not None:
        action = actions_for(user).filter(id=action_id).first()
    effect = effect if effect in _EFFECTS else "require"
    risks = [risk] if risk in Risk.values else []
    name = slugify(f"{agent}-{action_type}-{effect}")[:100] or "new-rule"
    admin_query = {
        "name": name,
        "agent": agent,
        "action_type": action_type,
        "effect": effect,
        "risks": json.dumps(risks),
        "description": f"Made from action {action.id}" if action is not None else "",
    }
    return {
        "name": name,
        "agent": agent,
        "action_type": action_type,
        "effect": effect,
        "risks": risks,
        "action": action,
        "admin_url": f"{reverse('admin:approvals_policyrule_add')}?{urlencode(admin_query)}",
    }
