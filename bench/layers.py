"""Where a write's CPU goes, layer by layer: ``python -m bench.layers [MODE] [N]``.

MODE is one of ``bench.profile``'s writes (``propose-pending``, the default, ``propose-auto``, ``propose-deny``,
``approve``), sent N times (2,000 unless given) to ``config.asgi.application`` in this process as ``bench.profile``
sends them. Each layer's functions are wrapped to add up the CPU time of the thread that runs them
(``time.thread_time``); the request's whole CPU is the process's. Printed per request: the whole, the event loop's
side (the whole less the request's thread), and each layer less the layers inside it (docs/BENCHMARKS.md, section 9,
twelfth and thirteenth sessions): those of approvals.api.plain_writes, which takes both writes. The machine's speed
moves the figures; their shares move less.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench import profile

MODES = ("propose-pending", "propose-auto", "propose-deny", "approve")
WARMUP = 50


@dataclass(frozen=True)
class Layer:
    name: str
    where: str  # "module:attribute" or "module:Class.attribute"
    inside: str = ""  # the layer it runs within ("" for the request's thread)


def layers_for(mode: str) -> tuple[Layer, ...]:
    # Both writes are taken by approvals.api.plain_writes: one crossing, the view's parts in DRF's order.
    view, serializer, service, auth = (
        ("approve", "ApproveInput", "approve_action", "approvals.api.authentication:authenticate_reviewer_token")
        if mode == "approve"
        else ("propose", "ProposalInput", "propose_action", "agents.authentication:authenticate_agent_key")
    )
    order, view_part = "the shortcut's order (rate limit, parsing)", f"views.{view}"
    return (
        Layer("the request's thread", "approvals.api.plain_writes:PlainWrites._respond_on_thread"),
        Layer(order, "approvals.api.plain_writes:PlainWrites._act", "the request's thread"),
        Layer("authentication", auth, order),
        Layer(view_part, f"approvals.api.views:{view}", order),
        Layer("validation (serializer)", f"approvals.api.serializers:{serializer}.is_valid", view_part),
        Layer(f"the service ({service})", f"approvals.services:{service}", view_part),
    )


def exclusive(total: float, spent: dict[str, float], layers: tuple[Layer, ...]) -> list[tuple[str, float]]:
    """(what, CPU) per request, each layer less the layers directly inside it, after the whole and the loop's side."""
    rows = [("the whole request (the process)", total)]
    rows.append(("the event loop's side (the whole less the thread)", total - spent.get(layers[0].name, 0.0)))
    for layer in layers:
        within = sum(spent.get(other.name, 0.0) for other in layers if other.inside == layer.name)
        rows.append((layer.name + (" (less the layers inside)" if within else ""), spent.get(layer.name, 0.0) - within))
    return rows


@contextmanager
def timed(layers: tuple[Layer, ...], spent: Counter) -> Iterator[None]:
    """Each layer's function wrapped to add its thread's CPU time to ``spent[layer.name]`` while inside."""
    undo: list[Callable[[], None]] = []
    try:
        for layer in layers:
            module_name, _, path = layer.where.partition(":")
            owner: Any = importlib.import_module(module_name)
            *parents, attribute = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            original = getattr(owner, attribute)  # a class's own or inherited method: a plain function either way
            own = attribute in vars(owner)
            setattr(owner, attribute, _wrapped(original, layer.name, spent))
            undo.append(
                lambda owner=owner, attribute=attribute, original=original, own=own: (
                    setattr(owner, attribute, original) if own else delattr(owner, attribute)
                )
            )
        yield
    finally:
        for restore in reversed(undo):
            restore()


def _wrapped(function: Callable, name: str, spent: Counter) -> Callable:
    def layer(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.thread_time() - started

    return layer


def main(argv: list[str]) -> None:
    mode = argv[0] if argv else "propose-pending"
    if mode not in MODES or len(argv) > 2 or (len(argv) == 2 and not (argv[1].isdigit() and int(argv[1]) > 0)):
        raise SystemExit(f"usage: python -m bench.layers [{'|'.join(MODES)}] [N]")
    n = int(argv[1]) if len(argv) == 2 else 2000
    profile.setup_api()
    one = profile.api_request(mode, n + WARMUP)
    layers = layers_for(mode)
    spent: Counter = Counter()

    async def run(count: int) -> None:
        for _ in range(count):
            await one()

    loop = asyncio.new_event_loop()
    with timed(layers, spent):
        loop.run_until_complete(run(WARMUP))
        spent.clear()
        started = time.process_time()
        loop.run_until_complete(run(n))
        total = time.process_time() - started
    loop.close()
    print(f"{mode}: {n} requests, CPU per request by layer (ms, share of the whole)")
    for what, seconds in exclusive(total, dict(spent), layers):
        print(f"  {1000 * seconds / n:7.3f}  {100 * seconds / total:5.1f}%  {what}")


if __name__ == "__main__":
    main(sys.argv[1:])
