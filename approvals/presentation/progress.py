"""Where an action is on its way, in words a reviewer reads: its status, its steps, and whether approving it
needs a second, explicit "yes"."""

from __future__ import annotations

from dataclasses import dataclass

from approvals.models import ActionRequest, ActionStatus
from catalog.risk import Risk

# A status whose name alone would mislead a reader; every other status shows as its name.
STATUS_LABELS = {ActionStatus.UNKNOWN.value: "outcome unknown"}


def status_label(status: str) -> str:
    """A status as the pages show it: ``unknown`` reads "outcome unknown", not as a status nobody knows."""
    return STATUS_LABELS.get(str(status), str(status))


CONFIRM_RISKS = frozenset({Risk.HIGH, Risk.CRITICAL})


def needs_confirmation(action: ActionRequest) -> bool:
    """High and critical actions are approved only after a second, explicit "yes" in the web UI."""
    return action.risk in CONFIRM_RISKS


@dataclass(frozen=True)
class Step:
    label: str
    state: str  # done, current, todo, failed, stopped, unknown

    @property
    def spoken(self) -> str:
        """The state in words, for screen readers (the page shows it by colour and a tick)."""
        return {
            "done": "done",
            "current": "now",
            "todo": "next",
            "failed": "failed",
            "stopped": "ended",
            "unknown": "outcome unknown",
        }[self.state]


def progress_steps(action: ActionRequest) -> list[Step]:
    """Where the action is on its way: proposed, decided, queued, executing, and how it ended."""
    status = action.status
    proposed = Step("Proposed", "done")
    if status in (ActionStatus.REJECTED, ActionStatus.EXPIRED, ActionStatus.CANCELLED):
        return [proposed, Step(status.capitalize(), "stopped")]
    if status == ActionStatus.PENDING:
        return [proposed, Step("Awaiting approval", "current"), Step("Queued", "todo"), Step("Executing", "todo")]
    if status == ActionStatus.APPROVED and action.finished_at is not None:
        return [proposed, Step("Approved", "done"), Step("Handed back to the agent", "done")]
    started = action.execution_started_at is not None
    steps = [proposed, Step("Approved", "done")]
    if status == ActionStatus.APPROVED:
        return [*steps, Step("Queued", "current"), Step("Executing", "todo")]
    steps.append(Step("Queued", "done"))
    if status == ActionStatus.EXECUTING:
        return [*steps, Step("Executing", "current")]
    steps.append(Step("Executed", "done" if started else "todo"))
    if status == ActionStatus.SUCCEEDED:
        return [*steps, Step("Succeeded", "done")]
    if status == ActionStatus.UNKNOWN:
        return [*steps, Step("Outcome unknown", "unknown")]
    return [*steps, Step("Failed", "failed")]
