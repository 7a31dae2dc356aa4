from __future__ import annotations

from catalog.base import ActionType
from catalog.risk import Risk


class DecisionOnly(ActionType):
    name = "decision.only"
    title = "Decision only"
    description = (
        "Countersign executes nothing: the decision (and any edited parameters) goes back to the agent, "
        "which acts itself after approval."
    )
    risk = Risk.MEDIUM
    executes = False
    params_schema = {
        "type": "object",
        "description": "Free-form: whatever the agent will do, as it wants reviewers to see it.",
        "maxProperties": 100,
    }
