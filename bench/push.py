"""Live push latency (``make bench-push``): propose -> the event on every connected reviewer's websocket.

``BENCH_SOCKETS`` (200) reviewers, each with a logged-in session, hold ``/ws/events/`` open on the web
processes (spread over the uvicorn workers as the kernel hands out connections). An agent then proposes
``BENCH_EVENTS`` actions one after another (``BENCH_EVENT_GAP`` seconds apart); for every (action, socket)
pair the latency is the time from just before the POST was sent to the moment the event's bytes reached
that socket (bench/wsclient.py). Target: p99 <= 50 ms.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from urllib.parse import urlsplit

from bench import common, wsclient
from bench.common import Verdict, log

SOCKETS = int(os.environ.get("BENCH_SOCKETS", "200"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "60"))
GAP = float(os.environ.get("BENCH_EVENT_GAP", "0.25"))
WARMUP = 5

PROPOSAL = {
    "action_type": "decision.only",
    "summary": "Restart the billing service",
    "params": {"command": "restart", "service": "billing"},
    "context": {"reasoning": "It is stuck."},
}


def fixtures(count: int) -> tuple[str, list[str]]:
    """(agent key, one session cookie per reviewer)."""
    group = common.reviewers_group()
    owner = common.user("bench-owner")
    _, key = common.agent_with_key("bench-push", owner=owner, allow=["decision.only"])
    cookies = [common.session_cookie(common.user(f"bench-reviewer-{i:03d}", group=group)) for i in range(count)]
    return key, cookies


async def measure(url: str, key: str, cookies: list[str]) -> dict:
    import httpx

    parts = urlsplit(url)
    arrivals: dict[str, list[float]] = defaultdict(list)

    def on_message(message: dict, arrived: float) -> None:
        if message.get("type") == "action" and message.get("status") == "pending":
            arrivals[message["action_id"]].append(arrived)

    sockets = []
    for i in range(0, len(cookies), 20):  # connect in batches: a burst of 200 handshakes is not what we measure
        batch = cookies[i : i + 20]
        sockets += await asyncio.gather(
            *(wsclient.connect(parts.hostname, parts.port, "/ws/events/", c, on_message) for c in batch)
        )
    log(f"{len(sockets)} reviewer websockets connected (load {common.loadavg()})")
    await asyncio.sleep(1.0)

    latencies: list[float] = []
    fanout: list[float] = []
    first: list[float] = []
    post_ms: list[float] = []
    missing = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        for n in range(WARMUP + EVENTS):
            sent = time.perf_counter()
            response = await client.post("/api/v1/actions", json=PROPOSAL)
            answered = time.perf_counter()
            response.raise_for_status()
            action_id = response.json()["id"]
            deadline = time.perf_counter() + 5
            while len(arrivals[action_id]) < len(sockets) and time.perf_counter() < deadline:
                await asyncio.sleep(0.002)
            got = arrivals.pop(action_id, [])
            if n >= WARMUP:
                missing += len(sockets) - len(got)
                latencies += [t - sent for t in got]
                post_ms.append(answered - sent)
                if got:
                    first.append(min(got) - sent)
                    fanout.append(max(got) - sent)
            await asyncio.sleep(GAP)
    for s in sockets:
        s.close()
    return {
        "sockets": len(sockets),
        "events": EVENTS,
        "deliveries": len(latencies),
        "missing": missing,
        "propose_to_event_ms": common.summary_ms(latencies),
        "first_socket_ms": common.summary_ms(first),
        "last_socket_ms": common.summary_ms(fanout),
        "propose_response_ms": common.summary_ms(post_ms),
    }


def main() -> None:
    common.wait_for_quiet()
    load_start = common.loadavg()
    common.prepare_database()
    common.flush_redis()
    common.setup_django()
    key, cookies = fixtures(SOCKETS)
    with common.Stack() as stack:
        _, url = stack.web(common.server_env())
        log(f"web: {common.WEB_WORKERS} uvicorn workers; load {common.loadavg()}")
        figures = asyncio.run(measure(url, key, cookies))
    figures.update({"web_workers": common.WEB_WORKERS, "load_start": load_start, "load_end": common.loadavg()})
    p99 = figures["propose_to_event_ms"]["p99_ms"]
    common.report(
        "push",
        figures,
        [
            Verdict("propose -> event p99 ms", p99, "<= 50", p99 <= 50),
            Verdict("events not received", figures["missing"], "0", figures["missing"] == 0),
        ],
    )


if __name__ == "__main__":
    main()
