"""History seeding for the benchmarks: N historic actions, fast (docs/BENCHMARKS.md). Never in production.

Run it as ``python -m bench.seed_history N [--pending P] [--audit]`` (bench/seed_history.py sets Django up);
this module needs Django set up before it is imported.

Rows go in with COPY in batches, oldest first: a realistic mix of action types, agents, reviewer groups and
outcomes (mostly succeeded, then rejected, expired, cancelled, failed, decision-only approvals), each decided
action with its review(s), and ``--pending`` actions still waiting in the queue. With ``--audit`` every
action also gets its audit events (proposed, decided, executed), appended to the hash chain exactly as
``audit.chain.record_event`` would chain them (``body`` included), so ``verify_audit`` has a realistic log
to check.

The agents, reviewers and groups it needs are made directly (``history-*``), not through the audited
services: this is seed data, not a record of anyone's actions.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from agents.models import Agent
from approvals.models import ActionRequest, ActionStatus, Review
from audit.chain import GENESIS_HASH, _lock_and_read_head, seal
from audit.models import AuditEvent
from catalog import registry

# Outcome of a historic (not pending) action, by weight.
OUTCOMES = [
    (ActionStatus.SUCCEEDED, 55),
    (ActionStatus.REJECTED, 12),
    (ActionStatus.EXPIRED, 10),
    (ActionStatus.CANCELLED, 8),
    (ActionStatus.APPROVED, 10),  # decision.only: approved is where it ends
    (ActionStatus.FAILED, 5),
]
TYPES = [
    ("http.request", 40),
    ("decision.only", 20),
    ("slack.post_message", 15),
    ("email.send", 10),
    ("file.write", 10),
    ("scim.group_membership", 5),
]
SERVICES = ["billing", "search", "checkout", "payments", "auth", "reports", "inventory", "mailer"]
VERBS = ["Restart", "Scale up", "Read the status of", "Rotate the logs of", "Notify the owners of", "Pause"]
PEOPLE = [f"person{i}@example.com" for i in range(40)] + [""] * 40


def _params(action_type: str, rng: random.Random, service: str) -> dict:
    if action_type == "http.request":
        method = rng.choice(["GET", "GET", "GET", "POST", "PUT"])
        return {"credential": "internal-api", "method": method, "path": f"/v1/{service}/status"}
    if action_type == "slack.post_message":
        return {"credential": "slack-bot", "channel": f"#{service}", "text": f"{service} is being restarted."}
    if action_type == "email.send":
        return {"to": [f"oncall-{service}@example.com"], "subject": f"{service} update", "body": "FYI."}
    if action_type == "file.write":
        return {"path": f"config/{service}.yaml", "content": f"replicas: {rng.randint(1, 9)}\n"}
    if action_type == "scim.group_membership":
        return {"credential": "idp", "group": f"{service}-admins", "user": rng.choice(PEOPLE[:40]), "op": "add"}
    return {"command": "restart", "service": service}


class Command(BaseCommand):
    help = "Insert N historic actions (COPY, batched) for benchmarks; --audit adds their hash-chained audit events."

    def add_arguments(self, parser):
        parser.add_argument("count", type=int)
        parser.add_argument("--pending", type=int, default=100, help="how many of them are still pending")
        parser.add_argument("--agents", type=int, default=25)
        parser.add_argument("--days", type=int, default=365, help="spread the history over this many days")
        parser.add_argument("--batch", type=int, default=20000)
        parser.add_argument("--audit", action="store_true", help="also append their audit events to the chain")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--rebuild-indexes",
            choices=["auto", "yes", "no"],
            default="auto",
            help="drop the tables' non-unique indexes while loading and build them again after (auto: from 100k)",
        )

    def handle(self, count, pending, agents, days, batch, audit, seed, rebuild_indexes, **options):
        if connection.vendor != "postgresql":
            raise CommandError("seed_history uses COPY: PostgreSQL only")
        for flag, value in (("the count", count), ("--agents", agents), ("--days", days), ("--batch", batch)):
            if value < 1:
                raise CommandError(f"{flag} must be at least 1, not {value}")
        if not 0 <= pending <= count:
            raise CommandError("--pending is between 0 and the count")
        rng = random.Random(seed + ActionRequest.objects.count())
        groups, reviewers, agent_ids = self._people(agents)
        self._types = [(t, registry.get(t)) for t, _ in TYPES]
        self._type_weights = [w for _, w in TYPES]
        self._days = days
        started = time.monotonic()
        rebuild = rebuild_indexes == "yes" or (rebuild_indexes == "auto" and count >= 100_000)
        with transaction.atomic():
            # One transaction: if anything fails, the rows and the dropped indexes both roll back.
            dropped = self._drop_indexes((ActionRequest, Review, AuditEvent)) if rebuild else []
            self._load(count, pending, batch, audit, rng, groups, reviewers, agent_ids, started)
            if dropped:
                self.stdout.write(f"  building {len(dropped)} indexes again ...")
                self.stdout.flush()
                with connection.cursor() as cursor:
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # check the deferred foreign keys now
                    cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
                    for definition in dropped:
                        cursor.execute(definition)
        with connection.cursor() as cursor:
            # What autovacuum would have done by now on a live database: statistics, and the visibility map
            # that lets the planner count through index-only scans.
            for model in (ActionRequest, Review, AuditEvent):
                cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
        total = ActionRequest.objects.count()
        self.stdout.write(f"seeded {count} actions in {time.monotonic() - started:.1f}s; {total} in the table now")

    def _drop_indexes(self, models) -> list[str]:
        """Drop the non-unique indexes of ``models``' tables; return their definitions to build them again."""
        tables = [m._meta.db_table for m in models]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = ANY(%s) AND indexdef NOT LIKE 'CREATE UNIQUE INDEX%%'",
                [tables],
            )
            found = cursor.fetchall()
            for name, _ in found:
                cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
        return [definition for _, definition in found]

    def _load(self, count, pending, batch, audit, rng, groups, reviewers, agent_ids, started) -> None:
        now = timezone.now()
        start = now - timedelta(days=self._days)
        historic = count - pending
        step = (now - timedelta(hours=25) - start) / max(1, historic)
        made = 0
        while made < count:
            n = min(batch, count - made)
            actions, reviews, events = [], [], []
            for i in range(made, made + n):
                is_pending = i >= historic
                created = (
                    now - timedelta(seconds=rng.uniform(60, 6 * 3600))
                    if is_pending
                    else start + step * i + timedelta(seconds=rng.uniform(0, 30))
                )
                action, action_reviews = self._action(rng, created, is_pending, groups, reviewers, agent_ids)
                actions.append(action)
                reviews += action_reviews
            if audit:
                actions.sort(key=lambda a: a["created_at"])
            with transaction.atomic():
                self._copy(ActionRequest, actions)
                self._copy(Review, reviews, skip=("id",))
                if audit:
                    events = self._append_audit(actions)
            made += n
            rate = made / (time.monotonic() - started)
            extra = f", {len(events)} audit events" if audit else ""
            self.stdout.write(f"  {made}/{count} actions ({rate:,.0f}/s){extra}")
            self.stdout.flush()

    # --- who ---------------------------------------------------------------------------------------

    def _people(self, agents: int):
        owner, _ = User.objects.get_or_create(username="history-owner", defaults={"email": "owner@example.com"})
        groups = [
            Group.objects.get_or_create(name=settings.COUNTERSIGN_DEFAULT_REVIEWER_GROUP)[0],
            Group.objects.get_or_create(name="history-sre")[0],
        ]
        reviewers: dict[int, list[int]] = {}
        for group in groups:
            members = []
            for i in range(8):
                user, _ = User.objects.get_or_create(username=f"history-{group.name}-{i}")
                user.groups.add(group)
                members.append(user.id)
            reviewers[group.id] = members
        agent_ids = []
        for i in range(agents):
            agent, _ = Agent.objects.get_or_create(
                name=f"history-agent-{i:02d}", defaults={"owner": owner, "description": "seed_history"}
            )
            agent_ids.append((agent.id, agent.name))
        return groups, reviewers, agent_ids

    # --- what --------------------------------------------------------------------------------------

    def _action(self, rng, created, is_pending, groups, reviewers, agent_ids):
        action_type, type_obj = rng.choices(self._types, weights=self._type_weights)[0]
        status = ActionStatus.PENDING
        if not is_pending:
            status = rng.choices([s for s, _ in OUTCOMES], weights=[w for _, w in OUTCOMES])[0]
            if action_type == "decision.only" and status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
                status = ActionStatus.APPROVED
            elif action_type != "decision.only" and status == ActionStatus.APPROVED:
                status = ActionStatus.SUCCEEDED
        group = groups[0] if rng.random() < 0.8 else groups[1]
        agent_id, agent_name = rng.choice(agent_ids)
        service = rng.choice(SERVICES)
        params = _params(action_type, rng, service)
        required = 2 if type_obj is not None and type_obj.modifies_access else 1
        expires = created + timedelta(hours=24)
        decided = started = finished = None
        result, reason, attempts = None, "", 0
        if status == ActionStatus.EXPIRED:
            decided = finished = expires
        elif status != ActionStatus.PENDING:
            decided = created + timedelta(seconds=rng.uniform(20, 4 * 3600))
            finished = decided
        if status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
            started = decided + timedelta(milliseconds=rng.uniform(20, 200))
            finished = started + timedelta(milliseconds=rng.uniform(50, 2000))
            attempts = 1
            ok = status == ActionStatus.SUCCEEDED
            result = {"status_code": 200, "body": {"ok": True}} if ok else {"error": "target answered 503"}
        if status == ActionStatus.REJECTED:
            reason = rng.choice(["Not during the freeze.", "Wrong service.", "Ask the owner first."])
        action_id = uuid.uuid4()
        action = {
            "id": action_id,
            "agent_id": agent_id,
            "agent_name": agent_name,
            "action_type": action_type,
            "params": params,
            "summary": f"{rng.choice(VERBS)} {service}",
            "context": {"reasoning": f"Ticket {rng.randint(1000, 99999)} asked for it."},
            "on_behalf_of": rng.choice(PEOPLE),
            "request_digest": hashlib.sha256(action_id.bytes).hexdigest(),
            "status": status,
            "risk": str(type_obj.risk) if type_obj is not None else "medium",
            "required_approvals": required,
            "reviewer_group_id": group.id,
            "policy_rule": "default",
            "policy_effect": "require",
            "policy_explanation": f"{required} approval(s) from {group.name} (default rule).",
            "decision_reason": reason,
            "result": result,
            "created_at": created,
            "updated_at": finished or created,
            "expires_at": expires,
            "decided_at": decided,
            "execution_started_at": started,
            "finished_at": finished,
            "execution_attempts": attempts,
        }
        reviews = []
        verdict = None
        if status in (ActionStatus.APPROVED, ActionStatus.SUCCEEDED, ActionStatus.FAILED):
            verdict = Review.Verdict.APPROVE
        elif status == ActionStatus.REJECTED:
            verdict = Review.Verdict.REJECT
        if verdict:
            count = required if verdict == Review.Verdict.APPROVE else 1
            for reviewer_id in rng.sample(reviewers[group.id], count):
                reviews.append(
                    {
                        "action_id": action_id,
                        "reviewer_id": reviewer_id,
                        "verdict": verdict,
                        "via": rng.choice([Review.Via.WEB, Review.Via.WEB, Review.Via.SLACK, Review.Via.API]),
                        "comment": "",
                        "created_at": decided,
                    }
                )
        return action, reviews

    # --- how ---------------------------------------------------------------------------------------

    def _copy(self, model, rows: list[dict], skip: tuple[str, ...] = ()) -> None:
        """COPY ``rows`` into ``model``'s table; columns a row leaves out get the field's default."""
        if not rows:
            return
        fields = [f for f in model._meta.concrete_fields if f.attname not in skip]
        json_fields = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
        defaults = {}
        for f in fields:
            if f.attname not in rows[0]:
                value = f.get_default()
                defaults[f.attname] = Jsonb(value) if f.attname in json_fields and value is not None else value
        columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        with connection.cursor() as cursor:
            raw = cursor.cursor  # the psycopg cursor, for COPY
            with raw.copy(f"COPY {model._meta.db_table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    values = []
                    for f in fields:
                        name = f.attname
                        if name in row:
                            value = row[name]
                            if name in json_fields and value is not None:
                                value = Jsonb(value)
                            values.append(value)
                        else:
                            values.append(defaults[name])
                    copy.write_row(values)

    def _append_audit(self, actions: list[dict]) -> list[dict]:
        """Each action's events, chained after the current head (inside the caller's transaction)."""
        last = _lock_and_read_head()
        seq, prev_hash, prev_at = last if last else (0, GENESIS_HASH, None)
        raw: list[tuple] = []
        for a in actions:
            agent_actor = ("agent", a["agent_name"], "api")
            raw.append((a["created_at"], agent_actor, "action.proposed", a, {"action_type": a["action_type"]}))
            status = a["status"]
            if status in (ActionStatus.PENDING,):
                continue
            human = ("user", "history-reviewer", "web")
            system = ("system", "countersign", "worker")
            if status == ActionStatus.EXPIRED:
                raw.append((a["decided_at"], ("system", "countersign", "beat"), "action.expired", a, {}))
            elif status == ActionStatus.CANCELLED:
                raw.append((a["decided_at"], agent_actor, "action.cancelled", a, {}))
            elif status == ActionStatus.REJECTED:
                raw.append((a["decided_at"], human, "action.rejected", a, {"reason": a["decision_reason"]}))
            else:
                raw.append((a["decided_at"], human, "action.approved", a, {"from": "pending", "to": "approved"}))
            if a["execution_started_at"]:
                raw.append((a["execution_started_at"], system, "execution.started", a, {}))
                verb = "execution.succeeded" if status == ActionStatus.SUCCEEDED else "execution.failed"
                raw.append((a["finished_at"], system, verb, a, {"result": a["result"]}))
        raw.sort(key=lambda e: e[0])
        rows = []
        for at, (actor_type, actor, via), verb, a, data in raw:
            seq += 1
            at = max(at, prev_at) if prev_at else at
            event = seal(
                AuditEvent(
                    seq=seq,
                    at=at,
                    actor_type=actor_type,
                    actor=actor,
                    via=via,
                    verb=verb,
                    object_type="action",
                    object_id=str(a["id"]),
                    action_id=a["id"],
                    agent_name=a["agent_name"],
                    data=data,
                    request_id="",
                    prev_hash=prev_hash,
                )
            )  # body (the hashed text) and hash, as record_event fills them
            rows.append({f.attname: getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields})
            prev_hash, prev_at = event.hash, at
        self._copy(AuditEvent, rows)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'seq'), %s)", [AuditEvent._meta.db_table, max(seq, 1)]
            )
        return rows
