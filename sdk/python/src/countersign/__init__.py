"""Countersign for agents: propose actions, wait for people to decide, act only when approved.

```python
from countersign import Countersign, Rejected

cs = Countersign("https://countersign.internal", "cs_...")  # or COUNTERSIGN_URL / COUNTERSIGN_API_KEY
action = cs.propose("decision.only", {"command": "restart"}, "Restart the billing service")
try:
    cs.wait(action.id, until="decision")
except Rejected as exc:
    print("No:", exc.reason)
```
"""

from countersign.client import VERSION as __version__
from countersign.client import AsyncCountersign, Countersign
from countersign.decorators import default_on_reject, require_approval
from countersign.errors import (
    ActionError,
    APIError,
    Cancelled,
    Conflict,
    CountersignError,
    ExecutionFailed,
    Expired,
    InvalidInput,
    NotAllowed,
    NotAuthenticated,
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    RateLimited,
    Rejected,
    ServerError,
    Unavailable,
    WaitTimeout,
)
from countersign.models import Action, ActionType, Decision, Review
from countersign.webhooks import EVENT_TYPES, InvalidWebhook, verify_webhook

__all__ = [
    "EVENT_TYPES",
    "APIError",
    "Action",
    "ActionError",
    "ActionType",
    "AsyncCountersign",
    "Cancelled",
    "Conflict",
    "Countersign",
    "CountersignError",
    "Decision",
    "ExecutionFailed",
    "Expired",
    "InvalidInput",
    "InvalidWebhook",
    "NotAllowed",
    "NotAuthenticated",
    "NotFound",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "RateLimited",
    "Rejected",
    "Review",
    "ServerError",
    "Unavailable",
    "WaitTimeout",
    "__version__",
    "default_on_reject",
    "require_approval",
    "verify_webhook",
]
