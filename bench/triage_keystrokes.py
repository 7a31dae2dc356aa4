"""Keystrokes and seconds per decision: the classic queue against triage mode (``python -m bench.triage_keystrokes``).

A reviewer works through ``BENCH_TRIAGE_ACTIONS`` (20) mixed proposals by keyboard, in Chromium (Playwright,
Debian's chromium as the tests use it), once in each mode, on a fresh set of proposals each time:

- mixed: mostly low risk, some medium, some high and critical (typed confirmation), a quarter rejected with a
  short typed reason; always the action at the top of the queue (soonest to expire), as a reviewer working
  down the list would;
- classic: ``j`` selects the top row, ``a`` / ``r`` open it, Enter approves (or the word and Enter in the
  risky confirmation; or the reason and Ctrl+Enter), ``u`` back to the queue;
- triage (``?mode=triage``): ``a`` approves and the next action is selected; ``r``, the reason and Enter
  reject.

Every key pressed is counted (a typed word counts its letters). Seconds are the machine's: the page's
round trips and rendering with no human in them, from the first key of a decision until the page is ready for
the next. The server runs the production settings with the undo window at its default (5 s, which delays
execution, not the page). Its own database and Redis (bench/common.py); prints the table docs/BENCHMARKS.md
quotes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import timedelta

from bench import common
from bench.common import log

ACTIONS = int(os.environ.get("BENCH_TRIAGE_ACTIONS", "20"))
CHROMIUM = os.environ.get("BENCH_CHROMIUM", "/usr/bin/chromium")
REASON = "Not now"
WORD = "approve"
# The mix, repeated: risk and verdict of each proposal in queue order.
MIX = [
    ("low", "approve"),
    ("low", "approve"),
    ("medium", "approve"),
    ("low", "reject"),
    ("high", "approve"),
    ("low", "approve"),
    ("low", "approve"),
    ("critical", "reject"),
    ("medium", "approve"),
    ("low", "approve"),
]


@dataclass
class Run:
    mode: str
    keys: int = 0
    seconds: float = 0.0
    per_kind: dict[str, list[int]] = field(default_factory=dict)

    def press(self, page, key: str, count: int = 1) -> None:
        page.keyboard.press(key)
        self.keys += count

    def type(self, page, text: str) -> None:
        page.keyboard.type(text)
        self.keys += len(text)


def propose_all(agent_key: str, url: str, tag: str) -> dict[str, tuple[str, str]]:
    """``ACTIONS`` proposals, expiring in the order made: their risk and the verdict to give, by id."""
    import httpx

    from approvals.models import ActionRequest

    plan = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {agent_key}"}, timeout=30) as agent:
        for n in range(ACTIONS):
            risk, verdict = MIX[n % len(MIX)]
            response = agent.post(
                "/api/v1/actions",
                json={
                    "action_type": "decision.only",
                    "params": {"command": "restart", "service": f"svc-{tag}-{n}"},
                    "summary": f"Restart svc-{tag}-{n}",
                    "context": {"reasoning": "It is stuck."},
                },
            )
            response.raise_for_status()
            action_id = response.json()["id"]
            action = ActionRequest.objects.get(id=action_id)
            # The risk a rule for this kind of action would set; the order the queue shows (soonest first).
            ActionRequest.objects.filter(id=action_id).update(
                risk=risk, expires_at=action.created_at + timedelta(hours=1, seconds=n)
            )
            plan[action_id] = (risk, verdict)
    return plan


def top_row(page) -> str:
    return page.locator("#queue-body tr[data-action-id]").first.get_attribute("data-action-id")


def classic(page, plan, run: Run) -> None:
    page.goto("/")
    for _ in plan:
        started, before = time.perf_counter(), run.keys
        page.wait_for_selector("#queue-body tr[data-action-id]")
        action_id = top_row(page)
        risk, verdict = plan[action_id]
        run.press(page, "j")
        if verdict == "approve":
            run.press(page, "a")
            page.wait_for_url(f"**/actions/{action_id}#approve")
            page.wait_for_function("document.activeElement && document.activeElement.matches('button.approve')")
            run.press(page, "Enter")
            if risk in ("high", "critical"):
                page.wait_for_selector("#confirm-approve[open]")
                run.type(page, WORD)
                run.press(page, "Enter")
            page.wait_for_selector(".messages >> text=Approved.")
        else:
            run.press(page, "r")
            page.wait_for_url(f"**/actions/{action_id}#reject")
            page.wait_for_function("document.activeElement && document.activeElement.id === 'reject-reason'")
            run.type(page, REASON)
            run.press(page, "Control+Enter")
            page.wait_for_selector(".messages >> text=Rejected")
        run.press(page, "u")
        page.wait_for_selector("#queue-body", state="attached")
        page.wait_for_selector(f"#action-{action_id}", state="detached")
        run.seconds += time.perf_counter() - started
        run.per_kind.setdefault(f"{risk} {verdict}", []).append(run.keys - before)


def triage(page, plan, run: Run) -> None:
    page.goto("/?mode=triage")
    for _ in plan:
        started, before = time.perf_counter(), run.keys
        shown = page.wait_for_selector("#triage-detail .triage-action")
        action_id = shown.get_attribute("data-action-id")
        risk, verdict = plan[action_id]
        if verdict == "approve":
            run.press(page, "a")
            if risk in ("high", "critical"):
                page.wait_for_selector("#triage-confirm[open]")
                run.type(page, WORD)
                run.press(page, "Enter")
        else:
            run.press(page, "r")
            page.wait_for_function("document.activeElement && document.activeElement.id === 'triage-reason'")
            run.type(page, REASON)
            run.press(page, "Enter")
        page.wait_for_selector(f"#action-{action_id}", state="detached")
        page.wait_for_selector(f'#triage-detail .triage-action[data-action-id="{action_id}"]', state="detached")
        run.seconds += time.perf_counter() - started
        run.per_kind.setdefault(f"{risk} {verdict}", []).append(run.keys - before)


def main() -> None:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls between its steps are ordinary
    # blocking calls of a single-threaded driver (as the browser tests allow them).
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    common.prepare_database()
    common.flush_redis()
    common.setup_django()
    group = common.reviewers_group()
    owner = common.user("bench-owner")
    reviewer = common.user(f"bench-triager-{common.RUN_ID}", group=group)
    _, key = common.agent_with_key("bench-triage", owner=owner, allow=["decision.only"])
    from approvals.models import ActionRequest, ActionStatus

    # Nothing else pending in the reviewer's queue: earlier runs' leftovers are cancelled out of the way.
    ActionRequest.objects.filter(status=ActionStatus.PENDING).update(status=ActionStatus.CANCELLED)
    runs = []
    with common.Stack() as stack:
        env = common.server_env()
        _, url = stack.web(env, workers=1)
        cookie_name, cookie_value = common.session_cookie(reviewer).split("=", 1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM if os.path.exists(CHROMIUM) else None, args=["--no-sandbox", "--disable-gpu"]
            )
            for mode, drive in (("classic", classic), ("triage", triage)):
                plan = propose_all(key, url, mode)
                context = browser.new_context(base_url=url, viewport={"width": 1440, "height": 900})
                context.add_cookies([{"name": cookie_name, "value": cookie_value, "url": url}])
                page = context.new_page()
                page.set_default_timeout(15_000)
                run = Run(mode)
                drive(page, plan, run)
                statuses = set(ActionRequest.objects.filter(id__in=list(plan)).values_list("status", flat=True))
                assert statuses == {"approved", "rejected"}, statuses  # every decision landed
                context.close()
                runs.append(run)
                log(f"{mode}: {run.keys} keys, {run.seconds:.1f} s for {ACTIONS} decisions")
            browser.close()
    print(f"\n{ACTIONS} mixed decisions (machine time, no human in it); load {common.loadavg()}\n")
    print("| mode | keystrokes | per decision | seconds per decision |")
    print("|---|---|---|---|")
    for run in runs:
        print(f"| {run.mode} | {run.keys} | {run.keys / ACTIONS:.1f} | {run.seconds / ACTIONS:.2f} |")
    print("\n| decision | " + " | ".join(run.mode for run in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for kind in runs[0].per_kind:
        print(f"| {kind} | " + " | ".join(str(run.per_kind[kind][0]) for run in runs) + " |")


if __name__ == "__main__":
    main()
