"""``@require_approval``: a function that runs only after a person approved this very call.

The call is proposed as ``{"function": <name>, "kwargs": {<every argument by name>}}``
(a ``decision.only`` action by default, so Countersign itself executes nothing),
the decorator waits for the decision, and then:

- approved: the function runs, with the reviewer's edited arguments if they
  edited any (``decision.edited_params["kwargs"]``);
- rejected, expired, withdrawn, or no decision within ``timeout`` (the pending
  proposal is then withdrawn, so nobody approves a call that will never run):
  the function does not run, and the call returns ``on_reject(error)``, by
  default the string ``"Not approved by a human: <reason>"`` that an LLM tool
  loop can hand back to the model. An action whose execution's outcome is
  unknown (``OutcomeUnknown``: it may have taken effect) is answered the same
  way, with "check the target before retrying", never by running it again.

Other errors (a bad key, a type the agent may not propose, an unreachable
service) raise: they need a programmer, not a model. When the wait breaks
after the proposal was made, the proposal is withdrawn first (best effort).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

from countersign import errors
from countersign.client import AsyncCountersign, Countersign

__all__ = ["call_params", "default_on_reject", "require_approval"]

MAX_SUMMARY = 280


def default_on_reject(error: errors.CountersignError) -> str:
    """What a refused call returns unless ``on_reject`` is given."""
    if isinstance(error, errors.Rejected):
        return f"Not approved by a human: {error.reason}"
    if isinstance(error, errors.Expired):
        return "Not approved by a human: the request expired before anyone decided."
    if isinstance(error, errors.Cancelled):
        return "Not approved by a human: the request was withdrawn before a decision."
    if isinstance(error, errors.OutcomeUnknown):
        return (
            "Approved, but the execution was interrupted after it may have taken effect: "
            f"{errors.OUTCOME_UNKNOWN_ADVICE}."
        )
    if isinstance(error, errors.WaitTimeout):
        return "Not approved by a human: nobody decided in time, so the request was withdrawn."
    return f"Not approved by a human: {error}"


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would carry it; what JSON can't hold is shown by its repr."""
    return json.loads(json.dumps(value, default=repr))


def call_params(fn: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[inspect.BoundArguments, dict[str, Any]]:
    """The bound call (defaults applied) and the params reviewers see: the function's name and arguments."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound, {"function": fn.__name__, "kwargs": _jsonable(dict(bound.arguments))}


def _approved_call(bound: inspect.BoundArguments, shown: dict[str, Any], action) -> tuple[tuple, dict]:
    """The (args, kwargs) to run: the original objects, except where the reviewer edited a value."""
    arguments = dict(bound.arguments)
    edited = action.decision.edited_params if action.decision else None
    if isinstance(edited, dict) and isinstance(edited.get("kwargs"), dict):
        for name, value in edited["kwargs"].items():
            if name in arguments and value != shown["kwargs"].get(name):
                arguments[name] = value
    final = inspect.BoundArguments(bound.signature, arguments)  # type: ignore[arg-type]
    return final.args, final.kwargs


def _summary(summary: str | Callable[..., str] | None, fn: Callable, args: tuple, kwargs: dict, bound) -> str:
    if callable(summary):
        text = summary(*args, **kwargs)
    elif summary is not None:
        text = summary.format(**bound.arguments)
    else:
        shown = ", ".join(f"{k}={v!r}" for k, v in bound.arguments.items())
        text = f"Call {fn.__name__}({shown})"
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"


def require_approval(
    client: Countersign | AsyncCountersign,
    action_type: str = "decision.only",
    summary: str | Callable[..., str] | None = None,
    *,
    reasoning: str | Callable[..., str] | None = None,
    context: dict[str, Any] | None = None,
    on_behalf_of: str | None = None,
    expires_in: int | None = None,
    timeout: float | None = 3600.0,
    on_reject: Callable[[errors.CountersignError], Any] = default_on_reject,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a function (sync or async) so each call waits for a person's approval.

    ``summary`` is what reviewers read first: a ``str.format`` template over
    the arguments by name (``"Refund {amount} to {customer}"``) or a callable
    taking the same arguments as the function. ``reasoning`` likewise (goes to
    ``context.reasoning``). With an ``AsyncCountersign`` client only async
    functions can be decorated; a blocking ``Countersign`` client serves both
    (for an async function it waits in a worker thread).
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        is_async = inspect.iscoroutinefunction(fn)
        if isinstance(client, AsyncCountersign) and not is_async:
            raise TypeError(f"{fn.__name__} is not async: use a blocking Countersign client for it.")

        def proposal(args: tuple, kwargs: dict):
            bound, params = call_params(fn, args, kwargs)
            ctx = dict(context or {})
            why = reasoning(*args, **kwargs) if callable(reasoning) else reasoning
            return (
                bound,
                params,
                {
                    "action_type": action_type,
                    "params": params,
                    "summary": _summary(summary, fn, args, kwargs, bound),
                    "context": ctx,
                    "reasoning": why,
                    "on_behalf_of": on_behalf_of,
                    "expires_in": expires_in,
                },
            )

        def decide_sync(args: tuple, kwargs: dict):
            assert isinstance(client, Countersign)
            bound, params, body = proposal(args, kwargs)
            action = client.propose(**body)
            try:
                approved = client.wait(action.id, timeout=timeout, until="decision")
            except errors.WaitTimeout as exc:
                _withdraw_sync(client, action.id)
                return None, exc
            except errors.ActionError as exc:
                return None, exc
            except errors.CountersignError:
                _give_up_sync(client, action.id)
                raise
            return _approved_call(bound, params, approved), None

        if not is_async:

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                call, refusal = decide_sync(args, kwargs)
                if refusal is not None:
                    return on_reject(refusal)
                return fn(*call[0], **call[1])

            return wrapper

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if isinstance(client, AsyncCountersign):
                call, refusal = await _decide_async(client, proposal, args, kwargs, timeout)
            else:
                call, refusal = await asyncio.to_thread(decide_sync, args, kwargs)
            if refusal is not None:
                return on_reject(refusal)
            return await fn(*call[0], **call[1])

        return async_wrapper

    return decorate


async def _decide_async(client: AsyncCountersign, proposal, args: tuple, kwargs: dict, timeout: float | None):
    bound, params, body = proposal(args, kwargs)
    action = await client.propose(**body)
    try:
        approved = await client.wait(action.id, timeout=timeout, until="decision")
    except errors.WaitTimeout as exc:
        with contextlib.suppress(errors.Conflict):  # decided meanwhile: still not run, the answer came too late
            await client.cancel(action.id)
        return None, exc
    except errors.ActionError as exc:
        return None, exc
    except errors.CountersignError:
        # The wait broke (unreachable, a bad answer): the call will not run, so nobody should approve it.
        with contextlib.suppress(errors.CountersignError):
            await client.cancel(action.id)
        raise
    return _approved_call(bound, params, approved), None


def _withdraw_sync(client: Countersign, action_id: str) -> None:
    with contextlib.suppress(errors.Conflict):  # decided meanwhile: still not run, the answer came too late
        client.cancel(action_id)


def _give_up_sync(client: Countersign, action_id: str) -> None:
    """The wait broke (unreachable, a bad answer): the call will not run, so nobody should approve it."""
    with contextlib.suppress(errors.CountersignError):  # best effort: the error being raised says what went wrong
        client.cancel(action_id)
