from __future__ import annotations

from typing import Any

from catalog.base import ActionType, shorten
from catalog.risk import Risk


class HumanQuestion(ActionType):
    """A question for a person. Approving with a comment answers it: the comment is the answer.

    Nothing executes. Rejecting declines to answer, and the reason goes back
    to the agent like any rejection's. (The HumanLayer-compatible contact
    requests, approvals/humanlayer/, are stored as this type.)
    """

    name = "human.question"
    title = "Question for a human"
    description = (
        "The agent asks a person something. A reviewer answers by approving with a comment (the comment is "
        "the answer) or declines by rejecting with a reason. Countersign executes nothing."
    )
    risk = Risk.LOW
    executes = False
    preview_offline = True
    params_schema = {
        "type": "object",
        "properties": {
            "question": {"type": "string", "minLength": 1, "maxLength": 20000, "description": "What to ask."},
            "subject": {"type": "string", "maxLength": 280, "description": "A short subject line."},
        },
        "required": ["question"],
        "additionalProperties": False,
    }

    def describe(self, params: dict[str, Any]) -> str:
        return f"Ask: {shorten(params.get('question') or params.get('subject') or '', 120)}"
