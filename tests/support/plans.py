"""What a PostgreSQL plan read: for tests that a page costs the same however long the history behind it."""

from __future__ import annotations

from typing import Any

from django.db import connection


def rows_read(plan: dict[str, Any], table: str = "approvals_actionrequest") -> int:
    """Rows PostgreSQL read from ``table``, anywhere in an EXPLAIN (ANALYZE, FORMAT JSON) plan."""
    own = plan.get("Actual Rows", 0) * plan.get("Actual Loops", 1) if plan.get("Relation Name") == table else 0
    return own + sum(rows_read(child, table) for child in plan.get("Plans", []))


def analyzed_plan(sql: str, params: Any = None) -> dict[str, Any]:
    """The top node of ``sql``'s EXPLAIN (ANALYZE, FORMAT JSON)."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        (plan,) = cursor.fetchone()[0]
    return plan["Plan"]
