"""Two builds or settings of the API server side by side: ``python -m bench.ab [options]``.

This machine's speed moves by half between seconds (docs/BENCHMARKS.md, section 9): two runs of ``make bench-api``
minutes apart measure the machine as much as the code. Here both servers run at once on one database with the same
fixtures (bench/api_cost.py's), and their rounds alternate, A B then B A, endpoint by endpoint, so each pair of rounds
sees nearly the same machine. Printed per endpoint: server CPU ms per request at ``--clients`` (median of each side),
the median of the pairs' differences and how many pairs B won, the same divided by wrk's CPU per request in each round
(the same work for both sides, so it moves only with the machine), and req/s.

    python -m bench.ab --b API_THREADS=1                        # one setting against the default
    git worktree add /tmp/before HEAD~1                         # or a build against another
    python -m bench.ab --a-tree /tmp/before --endpoints approve,propose-deny

A side is this checkout unless ``--a-tree``/``--b-tree`` names another (it runs with this checkout's virtualenv, on
a database migrated by this checkout: both builds need the same migrations); ``--a``/``--b NAME=VALUE`` add to its
server's environment. Figures in var/bench/ab.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench import api_cost, common
from bench.common import OUT, log

ENDPOINTS = ("read", "list", "wait", "propose", "propose-auto", "propose-deny", "approve")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", default="propose,approve", help=f"comma-separated, of: {', '.join(ENDPOINTS)}")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of rounds per endpoint (default 6)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per round (default 4)")
    parser.add_argument("--clients", type=int, default=32, help="closed-loop wrk clients (default 32)")
    for side in ("a", "b"):
        parser.add_argument(f"--{side}-tree", type=Path, default=common.ROOT, help=f"checkout that side {side} serves")
        parser.add_argument(f"--{side}", action="append", default=[], metavar="NAME=VALUE", help="server environment")
    args = parser.parse_args(argv)
    args.endpoints = [name.strip() for name in args.endpoints.split(",") if name.strip()]
    unknown = [name for name in args.endpoints if name not in ENDPOINTS]
    if unknown or not args.endpoints:
        parser.error(f"unknown endpoint {', '.join(unknown) or '(none)'}: choose from {', '.join(ENDPOINTS)}")
    if args.pairs < 1 or args.seconds <= 0 or args.clients < 1:
        parser.error("--pairs, --seconds and --clients must be positive")
    for side in ("a", "b"):
        tree = getattr(args, f"{side}_tree").resolve()
        if not (tree / "config" / "asgi.py").is_file():
            parser.error(f"--{side}-tree {tree}: not a Countersign checkout (no config/asgi.py)")
        setattr(args, f"{side}_tree", tree)
        pairs = getattr(args, side)
        if any("=" not in pair or not pair.split("=", 1)[0] for pair in pairs):
            parser.error(f"--{side}: NAME=VALUE")
        setattr(args, side, dict(pair.split("=", 1) for pair in pairs))
    if args.a_tree == args.b_tree and args.a == args.b:
        parser.error("A and B are the same: give a side another --*-tree or --a/--b setting")
    return args


def compare(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The figures of one endpoint's rounds, A's and B's in pairs (the i-th of each ran next to each other)."""
    a, b = rows["a"], rows["b"]
    cpu = [(x["web_cpu_ms_per_request"], y["web_cpu_ms_per_request"]) for x, y in zip(a, b, strict=True)]
    scaled = [(_per_wrk(x), _per_wrk(y)) for x, y in zip(a, b, strict=True) if _per_wrk(x) and _per_wrk(y)]
    return {
        "pairs": len(cpu),
        "cpu_ms": {"a": _median(x for x, _ in cpu), "b": _median(y for _, y in cpu)},
        "cpu_ms_b_minus_a": _median(y - x for x, y in cpu),
        "b_won": sum(1 for x, y in cpu if y < x),
        "cpu_per_wrk_cpu": {"a": _mean(x for x, _ in scaled), "b": _mean(y for _, y in scaled)},
        "b_over_a_per_wrk_cpu": round(_mean(y for _, y in scaled) / _mean(x for x, _ in scaled), 3) if scaled else None,
        "req_per_s": {"a": _median(r["req_per_s"] for r in a), "b": _median(r["req_per_s"] for r in b)},
        "db_cpu_ms": {
            "a": _median(r["db_cpu_ms_per_request"] for r in a),
            "b": _median(r["db_cpu_ms_per_request"] for r in b),
        },
        "errors": sum(r["errors"] for r in a + b),
    }


def _per_wrk(row: dict[str, Any]) -> float | None:
    """The server's CPU per request in units of wrk's in the same round: the machine's speed divided out."""
    wrk = row["wrk_cpu_ms_per_request"]
    return row["web_cpu_ms_per_request"] / wrk if wrk else None


def _median(values) -> float:
    values = list(values)
    return round(statistics.median(values), 3) if values else float("nan")


def _mean(values) -> float:
    values = list(values)
    return round(statistics.fmean(values), 2) if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    common.wait_for_quiet()
    common.prepare_database(api_cost.DATABASE_URL, fresh=True)
    common.flush_redis()
    common.setup_django(api_cost.DATABASE_URL)
    fx = api_cost.make_fixtures()
    requests = api_cost.requests_for(fx)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"a": [], "b": []} for name in args.endpoints}
    fastest = 1000.0  # approvals a second a pool is sized for (api_cost.approve_pool_size), raised as rounds go

    def one_round(name: str, url: str, workers: list[int], seconds: float) -> dict[str, Any]:
        nonlocal fastest
        request, ids = requests[name], []
        if name == "approve":
            ids = api_cost.copy_pending(fx.template_id, api_cost.approve_pool_size(fastest, seconds, args.clients))
            base = requests["approve"]
            request = api_cost.Request(
                base.method, "", base.headers, base.body, base.expect, api_cost.approve_paths(ids)
            )
        row = api_cost.measure(url, request, workers, connections=args.clients, seconds=seconds)
        api_cost.drop_unused(ids)
        fastest = max(fastest, row["req_per_s"])
        return row

    with common.Stack() as stack:
        servers = {}
        for side in ("a", "b"):
            env = common.server_env(api_cost.DATABASE_URL, **getattr(args, side))
            web, url = stack.web(env, name=f"web-{side}", cwd=getattr(args, f"{side}_tree"))
            servers[side] = (url, web.children())
            log(f"{side.upper()}: {getattr(args, f'{side}_tree')} {getattr(args, side) or ''} at {url}")
        for name in args.endpoints:
            for url, workers in servers.values():
                one_round(name, url, workers, api_cost.WARMUP_SECONDS)
        log("warmed up")
        for pair in range(args.pairs):
            for name in args.endpoints:
                for side in ("a", "b") if pair % 2 == 0 else ("b", "a"):
                    url, workers = servers[side]
                    row = one_round(name, url, workers, args.seconds)
                    rounds[name][side].append(row)
                    log(
                        f"pair {pair + 1}, {name}, {side.upper()}: CPU {row['web_cpu_ms_per_request']} ms/req, "
                        f"PostgreSQL {row['db_cpu_ms_per_request']} ms/req, {row['req_per_s']} req/s, "
                        f"wrk {row['wrk_cpu_ms_per_request']} ms/req, errors {row['errors']}"
                    )

    results = {name: compare(by_side) for name, by_side in rounds.items()}
    figures = {
        "a": {"tree": str(args.a_tree), "env": args.a},
        "b": {"tree": str(args.b_tree), "env": args.b},
        "clients": args.clients,
        "seconds_per_round": args.seconds,
        "results": results,
        "rounds": rounds,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ab.json").write_text(json.dumps({"machine": common.machine(), "figures": figures}, indent=2, default=str))
    print(f"\nserver CPU ms/request at {args.clients} clients, A = {args.a_tree} {args.a}, B = {args.b_tree} {args.b}")
    print("| endpoint | pairs | A | B | B - A, median of pairs | B won | B / A per wrk CPU | PostgreSQL A, B | req/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cpu, db, rate = r["cpu_ms"], r["db_cpu_ms"], r["req_per_s"]
        print(
            f"| {name} | {r['pairs']} | {cpu['a']} | {cpu['b']} | {r['cpu_ms_b_minus_a']:+} | {r['b_won']} of "
            f"{r['pairs']} | {r['b_over_a_per_wrk_cpu']} | {db['a']}, {db['b']} | {rate['a']}, {rate['b']} |"
        )
    log(f"figures in {OUT / 'ab.json'}")


if __name__ == "__main__":
    main()
