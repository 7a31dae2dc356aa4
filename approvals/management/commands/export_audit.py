import json
import uuid
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from approvals.selectors.audit import AuditFilter, iter_filtered
from audit.chain import event_body


def _moment(value: str) -> datetime:
    """ISO 8601 date or date-time; without a zone it is UTC."""
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(value)
        moment = datetime(day.year, day.month, day.day)
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


class Command(BaseCommand):
    help = "Write the audit log as JSON lines (one event per line, with its hashes) to stdout, optionally filtered."

    def add_arguments(self, parser):
        parser.add_argument("--since", type=int, default=0, metavar="SEQ", help="only events after this sequence")
        parser.add_argument("--actor", default="", help="only events by this actor (username, agent or system name)")
        parser.add_argument("--agent", default="", help="only events about this agent")
        parser.add_argument("--verb", default="", help='only this verb, or a prefix ending in "*" (e.g. "user.*")')
        parser.add_argument("--action", default="", metavar="UUID", help="only events of this action")
        parser.add_argument("--since-time", default="", metavar="ISO", help="only events at or after this time")
        parser.add_argument("--until-time", default="", metavar="ISO", help="only events before this time")

    def handle(self, since, actor, agent, verb, action, since_time, until_time, **options):
        try:
            audit_filter = AuditFilter(
                actor=actor,
                agent=agent,
                verb=verb,
                action_id=uuid.UUID(action) if action else None,
                since=_moment(since_time) if since_time else None,
                until=_moment(until_time) if until_time else None,
                after_seq=since,
            )
        except ValueError as exc:
            raise CommandError(f"invalid filter value: {exc}") from None
        for event in iter_filtered(audit_filter):
            line = {**event_body(event), "prev_hash": event.prev_hash, "hash": event.hash}
            self.stdout.write(json.dumps(line, sort_keys=True, separators=(",", ":")))
