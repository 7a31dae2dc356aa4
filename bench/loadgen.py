"""Closed-loop HTTP load: ``connections`` clients, each sending its next request when the last one answered
(with ``rate``, after a pause that makes all of them together offer about ``rate`` requests per second).

``wrk`` (Debian: ``apt-get install wrk``) when it is installed: C, so the load generator takes as little as
possible of the CPU the server needs. Otherwise (or with BENCH_LOADGEN=aiohttp) an aiohttp client in this
process. Both report requests/s, latency percentiles and how many answers were not the expected status.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from bench.common import OUT, percentile


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    errors: int  # connect/read/write/timeouts and unexpected statuses
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "tool": self.tool,
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "req_per_s": round(self.rps, 1),
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 2),
            "p90_ms": round(self.p90_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(self.max_ms, 2),
        }


def tool() -> str:
    wanted = os.environ.get("BENCH_LOADGEN", "")
    if wanted:
        return wanted
    return "wrk" if shutil.which("wrk") else "aiohttp"


def post_json(
    url: str,
    body: dict,
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    rate: float | None = None,
) -> LoadResult:
    # A client's pause between its answer and its next request: at a rate well below saturation, latency is
    # the service's own, not the queue that a closed loop of ``connections`` clients builds at full speed.
    pause_ms = 1000 * connections / rate if rate else 0
    if tool() == "wrk":
        return _wrk(url, body, headers, connections=connections, seconds=seconds, threads=threads, pause_ms=pause_ms)
    return asyncio.run(_aiohttp(url, body, headers, connections=connections, seconds=seconds, pause_ms=pause_ms))


_LUA = """
wrk.method = "POST"
wrk.body = {body}
{headers}
{delay}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON{{\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d,\\"status_errors\\":%d," ..
    "\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"max\\":%d}}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _wrk(
    url: str, body: dict, headers: dict[str, str], *, connections: int, seconds: float, threads: int, pause_ms: float
):
    OUT.mkdir(parents=True, exist_ok=True)
    script = OUT / f"wrk-{os.getpid()}.lua"
    header_lines = "\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    header_lines += '\nwrk.headers["Content-Type"] = "application/json"'
    # wrk calls delay() before each request: a random pause around pause_ms, so the clients don't move in step.
    delay = (
        f"delay = function() return math.random({int(pause_ms * 0.5)}, {int(pause_ms * 1.5)}) end" if pause_ms else ""
    )
    script.write_text(_LUA.format(body=_lua_string(json.dumps(body)), headers=header_lines, delay=delay))
    threads = max(1, min(threads, connections))
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCHJSON")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(line[len("BENCHJSON") :])
    return LoadResult(
        tool="wrk",
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=data["errors"] + data["status_errors"],
        p50_ms=data["p50"] / 1000,
        p90_ms=data["p90"] / 1000,
        p99_ms=data["p99"] / 1000,
        max_ms=data["max"] / 1000,
    )


async def _aiohttp(url: str, body: dict, headers: dict[str, str], *, connections: int, seconds: float, pause_ms: float):
    import random

    import aiohttp

    latencies: list[float] = []
    errors = 0
    payload = json.dumps(body).encode()
    all_headers = {**headers, "Content-Type": "application/json"}
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            if pause_ms:
                await asyncio.sleep(random.uniform(0.5, 1.5) * pause_ms / 1000)
            started = time.perf_counter()
            try:
                async with session.post(url, data=payload, headers=all_headers) as response:
                    await response.read()
                    if response.status >= 400:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return LoadResult(
        tool="aiohttp",
        requests=len(ms),
        seconds=elapsed,
        errors=errors,
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms) if ms else float("nan"),
    )
