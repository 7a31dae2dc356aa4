"""What the Slack notification and interactivity tests share: a fake Slack with Countersign's bot
configured, an in-process "worker" that runs what the outbox and the web process hand to Celery,
and signed interactivity requests as Slack sends them."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client, override_settings
from django.utils import timezone
from slack_sdk.signature import SignatureVerifier

from approvals import services, tasks
from approvals.models import ActionRequest, Notification, OutboxMessage
from approvals.outbox import dispatcher as outbox
from approvals.policies import store as policy_store
from approvals.slack import interactions as slack_interactions
from config.celery_app import app
from tests.conftest import CLI
from tests.support.fake_slack import TEAM_ID, FakeSlack

BOT_TOKEN = "xoxb-countersign-bot-token-0001"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVALS = "C0APPROVE1"  # "#approvals"
ESCALATION = "C0ESCALAT1"  # "#sre-leads"
BASE_URL = "https://countersign.example.com"


def slack_id() -> str:
    """A Slack member ID of its own per test (the user-link cache outlives a test)."""
    return "U" + uuid.uuid4().hex[:10].upper()


@pytest.fixture
def slack(db):
    with FakeSlack(token=BOT_TOKEN) as fake:
        fake.add_channel(APPROVALS, "approvals")
        fake.add_channel(ESCALATION, "sre-leads")
        with override_settings(
            COUNTERSIGN_SLACK_API_URL=fake.url,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            COUNTERSIGN_BASE_URL=BASE_URL,
            COUNTERSIGN_DEFAULT_NOTIFY=["slack:#approvals"],
        ):
            yield fake


@dataclass
class InlineWorker:
    """Stands in for Celery: records what is handed to it, and runs it in this process on ``run()``."""

    sent: list[tuple[str, list]] = field(default_factory=list)

    def send_task(self, name: str, args=None, **kwargs) -> None:
        self.sent.append((name, json.loads(json.dumps(args or []))))  # as the broker would carry them

    def tasks(self, name: str) -> list[list]:
        return [args for task, args in self.sent if task == name]

    def run(self) -> list[Any]:
        results = []
        while self.sent:
            name, args = self.sent.pop(0)
            if name == "approvals.deliver_outbox":
                results.append(outbox.deliver(args[0], in_worker=True))
            elif name == slack_interactions.TASK:
                results.append(tasks.slack_interaction(*args))
            elif name == "approvals.execute_action":
                results.append(services.execute_action(args[0]))
            else:
                raise AssertionError(f"unexpected task {name}")
        return results


@pytest.fixture
def worker(monkeypatch):
    inline = InlineWorker()
    monkeypatch.setattr(app, "send_task", inline.send_task)
    return inline


def deliver_due(kinds=(OutboxMessage.Kind.NOTIFY, OutboxMessage.Kind.WEBHOOK)) -> int:
    """What a worker does for every due notification and webhook (until none is left); returns how many went."""
    delivered = 0
    for _ in range(20):
        due = list(
            OutboxMessage.objects.filter(delivered_at__isnull=True, kind__in=kinds, next_attempt_at__lte=timezone.now())
            .order_by("id")
            .values_list("id", flat=True)
        )
        if not due:
            break
        delivered += sum(1 for message_id in due if outbox.deliver(message_id, in_worker=True))
    return delivered


def time_passes(seconds: float) -> None:
    """Move every undelivered outbox message ``seconds`` closer to its next attempt (and past the sweep grace)."""
    for message in OutboxMessage.objects.filter(delivered_at__isnull=True):
        OutboxMessage.objects.filter(id=message.id).update(
            next_attempt_at=message.next_attempt_at - timedelta(seconds=seconds),
            created_at=message.created_at - timedelta(seconds=seconds),
        )


def posted(action, channel: str = "slack:#approvals") -> Notification:
    return Notification.objects.get(action=action, channel=channel)


def block(blocks: list[dict], type_: str) -> list[dict]:
    return [b for b in blocks if b["type"] == type_]


def buttons(blocks: list[dict]) -> dict[str, dict]:
    """The message's buttons by action_id ({} when it has none)."""
    return {e["action_id"]: e for b in block(blocks, "actions") for e in b["elements"]}


def all_text(blocks: list[dict]) -> str:
    """Every piece of text in the blocks, joined (for "does the message say …" assertions)."""
    out: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    out.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return "\n".join(out)


def mrkdwn_texts(blocks: list[dict]) -> list[str]:
    """The texts Slack parses as mrkdwn (links, mentions); plain_text is shown as it is."""
    out: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return out


# --- interactivity requests ------------------------------------------------------------------------


def signed(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def form(payload: dict) -> str:
    return urlencode({"payload": json.dumps(payload)})


def post_interaction(body: str, headers: dict[str, str]):
    return Client().post(
        "/slack/interactivity", data=body, content_type="application/x-www-form-urlencoded", headers=headers
    )


def click_payload(message: dict, channel: str, action_id: str, slack_user: str) -> dict:
    """The block_actions payload Slack sends when ``slack_user`` clicks ``action_id`` on ``message``."""
    element = buttons(message["blocks"])[action_id]
    return {
        "type": "block_actions",
        "user": {"id": slack_user, "username": "someone", "team_id": TEAM_ID},
        "api_app_id": "A0COUNTER1",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "trigger_id": f"{int(time.time())}.4242.{uuid.uuid4().hex[:16]}",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel, "is_ephemeral": False},
        "channel": {"id": channel, "name": "approvals"},
        "message": message,
        "response_url": "https://hooks.slack.com/actions/T0FAKE001/1/abc",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "countersign_decide",
                "value": element.get("value"),
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def submission_payload(view: dict, slack_user: str, reason: str) -> dict:
    """The view_submission payload Slack sends when the reject modal ``view`` is submitted."""
    [reason_block] = [b for b in view["blocks"] if b["type"] == "input"]
    return {
        "type": "view_submission",
        "user": {"id": slack_user, "team_id": TEAM_ID},
        "team": {"id": TEAM_ID},
        "api_app_id": "A0COUNTER1",
        "view": {
            "id": "V00000001",
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": {
                "values": {
                    reason_block["block_id"]: {
                        reason_block["element"]["action_id"]: {"type": "plain_text_input", "value": reason}
                    }
                }
            },
        },
    }


def remind_after_a_minute(name: str, *, notify: tuple[str, ...] = (), escalate_to: tuple[str, ...] = ()) -> None:
    """A rule for decision.only actions that reminds after 60 s (and escalates to ``escalate_to``)."""
    rule: dict[str, Any] = {
        "name": name,
        "action_type": "decision.only",
        "effect": "require",
        "reminder_after_seconds": 60,
    }
    if notify:
        rule["notify"] = list(notify)
    if escalate_to:
        rule["escalate_to"] = list(escalate_to)
    policy_store.save_rule(rule, actor=CLI)


def send_reminder_now(action) -> int:
    """The action's reminder falls due and the beat task sends it (its messages are then in the outbox)."""
    ActionRequest.objects.filter(id=action.id).update(remind_at=timezone.now() - timedelta(seconds=1))
    return services.send_due_reminders()
