"""The HTTP gateway's service: one call from an unmodified client becomes one ``http.request`` action.

The front door (approvals.gateway.http) authenticates the agent, counts its rate and hands over what the client
sent: the credential named in the URL, the method, the path exactly as received (still percent-encoded), the
query string, the headers and the body. This module decides what of it may reach the target and proposes the
rest exactly as the API would (``propose_action``: capability, schema, policy, audit, outbox, live push).

- What the client sends is read, never trusted: a credential segment that is not a plain name, a path that could
  leave the credential's base URL (dot segments, encoded separators, ``//``, backslashes, double encoding), and
  headers that would smuggle something to the target (a second ``Authorization``, ``Cookie``, ``Proxy-*``,
  ``X-Forwarded-*``, ``Forwarded``, hop-by-hop headers, the credential's own header, a ``Host`` that is not
  Countersign's) are refused and audited (``gateway.refused``, counted per minute by ``record_refusal``). Of the
  rest only the allow-listed headers (``COUNTERSIGN_GATEWAY_FORWARD_HEADERS``) become the action's headers;
  everything else a client sends on its own (User-Agent, Accept-Encoding, Content-Type, ...) is dropped.
- An auto-approved call runs at once, in this process, through ``execute_action``: the same single-use grant
  bound to the approved params, the same at-most-once redemption. The approval also wrote the usual execute
  message, kept back from the broker while this process runs the call (``keep_executions``): settled once the call
  ran, delivered as usual if it did not (executions paused), and delivered by the sweep should this process die
  first, to a worker that runs the call or finds it run.
- A call that names a held action (``Countersign-Action``) is a replay: it must be the identical request (the same
  proposal digest), and never proposes or executes anything; a different request is refused and audited.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from agents.models import Agent
from approvals.action_types.http_request import FORBIDDEN_HEADERS, METHODS
from approvals.errors import Conflict, InvalidInput, NotFound, ServiceError
from approvals.models import ActionRequest, ActionStatus, Credential
from approvals.outbox.dispatcher import keep_executions, settle_kept_executions
from approvals.policies import rules as policies
from approvals.services.execution import execute_action
from approvals.services.proposals import Proposal, propose_action
from approvals.validation import BadJSON, load_json
from audit.chain import Actor, record_refusal

ACTION_TYPE = "http.request"
CREDENTIAL_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")
# Percent-encoded '/', '\', '%' (double encoding) and NUL: a target that decodes them once more would see a
# separator, a traversal or a truncation the checks here never saw.
ENCODED_HAZARDS = re.compile(r"%(2f|5c|25|00)", re.IGNORECASE)
# Never forwarded and never refused: what every HTTP client sends on its own, and Countersign's own headers.
DROPPED = frozenset(
    {
        "accept-encoding",
        "authorization",  # the agent's key (the door read it); a second one is refused below
        "connection",  # checked below: only keep-alive / close
        "content-length",
        "content-type",  # the body is re-encoded from what was parsed
        "countersign-action",
        "countersign-on-behalf-of",
        "countersign-wait",
        "expect",
        "host",  # checked below: must name Countersign
        "user-agent",
        "x-request-id",
    }
)
# Refused (400, audited): each would tell the target something Countersign did not approve, or change how the
# request is read on its way (hop-by-hop headers, RFC 9110 7.6.1).
SMUGGLING = frozenset(
    {
        "cookie",
        "cookie2",
        "forwarded",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method",
        "x-http-method-override",
        "x-method-override",
    }
    | (FORBIDDEN_HEADERS - DROPPED)  # cookie, idempotency-key, proxy-authorization, x-api-key
)
SMUGGLING_PREFIXES = ("x-forwarded-", "proxy-")
JSON_TYPES = re.compile(r"application/(?:[\w.+-]+\+)?json")
FORM_TYPE = "application/x-www-form-urlencoded"


class GatewayRefusal(ServiceError):
    """A call the gateway does not pass on; ``status`` is the HTTP status it answers with."""

    status, title, slug = 400, "Refused by the gateway", "gateway-refused"

    def __init__(self, detail: str, *, status: int = 400, title: str = "", slug: str = "", **kw: Any):
        super().__init__(detail, **kw)
        self.status = status
        self.title = title or self.title
        self.slug = slug or self.slug


@dataclass(frozen=True)
class GatewayCall:
    """What an unmodified client sent to ``/gateway/<credential><path>``, as the door received it."""

    credential: str
    method: str
    path: str  # as received, percent-encoding kept, starting with '/'
    query_string: str
    headers: tuple[tuple[str, str], ...]  # names lower-case, in the order sent
    body: bytes = b""
    on_behalf_of: str = ""
    via: str = "gateway"

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass
class GatewayResult:
    """The action a call became (or named), and whether this call ran it."""

    action: ActionRequest
    executed_here: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


def submit(agent: Agent, call: GatewayCall, *, replay: uuid.UUID | None = None) -> GatewayResult:
    """Propose ``call`` as an ``http.request`` (or find the held action ``replay`` names) and, when the policy
    approved it at once, execute it here. Raises ServiceError (a GatewayRefusal for what the gateway refuses)."""
    proposal = proposal_for(agent, call)
    if replay is not None:
        return GatewayResult(action=_replayed(agent, call, proposal, replay))
    with keep_executions() as kept:
        action, _ = propose_action(agent=agent, proposal=proposal)
    executed = False
    try:
        if action.status == ActionStatus.APPROVED and action.policy_effect == policies.AUTO_APPROVE:
            executed = execute_action(action.id) != ActionStatus.APPROVED
            return GatewayResult(action=ActionRequest.objects.get(id=action.id), executed_here=True)
        return GatewayResult(action=action)
    finally:
        settle_kept_executions(kept, executed=executed)


def current(action_id: uuid.UUID) -> ActionRequest | None:
    """The action as it stands now (the door re-reads it while it holds a call)."""
    return ActionRequest.objects.filter(id=action_id).first()


def proposal_for(agent: Agent, call: GatewayCall) -> Proposal:
    """The proposal ``call`` stands for; refuses (and audits) what must not reach the target."""
    if not CREDENTIAL_NAME.fullmatch(call.credential):
        _refuse(agent, call, "the credential in the address is not a plain name", kind="credential name")
    refusal = path_refusal(call.path)
    if refusal:
        _refuse(agent, call, f"the path {refusal}", kind="path")
    if call.method not in METHODS:
        raise GatewayRefusal(
            f"{call.method} does not pass the gateway; use one of {', '.join(METHODS)}.",
            status=405,
            title="Method not allowed",
            slug="method-not-allowed",
            extra={"allow": list(METHODS)},
        )
    credential = Credential.objects.filter(name=call.credential).only("kind", "scope").first()
    if credential is None:
        raise NotFound(f"No credential named {call.credential!r}.")
    params: dict[str, Any] = {"credential": call.credential, "method": call.method, "path": call.path}
    query = _query(call.query_string)
    if query:
        params["query"] = query
    headers = forwarded_headers(agent, call, credential)
    if headers:
        params["headers"] = headers
    params.update(_body(call))
    return Proposal(
        action_type=ACTION_TYPE,
        params=params,
        summary=f"{call.method} {call.path}"[:280],
        context={"via": "gateway"},
        on_behalf_of=call.on_behalf_of,
    )


def path_refusal(path: str) -> str:
    """Why ``path`` (as received, percent-encoded) could leave the credential's base URL; "" when it cannot.

    http.request's own check (``target_url``) runs on the proposal too; this one also refuses what a target
    that decodes the path once more, or treats '\\' as '/', would read differently from Countersign.
    """
    if not path.startswith("/"):
        return "must start with '/'"
    if ENCODED_HAZARDS.search(path):
        return "contains an encoded '/', '\\', '%' or NUL"
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8"
    if "\\" in decoded:
        return "contains a backslash"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        return "contains control characters"
    segments = decoded.split("/")[1:]
    if any(segment in (".", "..") for segment in segments):
        return "contains '.' or '..' segments"
    if "" in segments[:-1]:
        return "contains '//' (an empty segment)"
    return ""


def forwarded_headers(agent: Agent, call: GatewayCall, credential: Credential) -> dict[str, str]:
    """The allow-listed headers the target will see; refuses (and audits) every smuggling attempt."""
    allowed = set(settings.COUNTERSIGN_GATEWAY_FORWARD_HEADERS) - SMUGGLING
    proxy_added = set(settings.COUNTERSIGN_GATEWAY_PROXY_HEADERS)
    own_header = str(credential.scope.get("header", "")).lower() if credential.kind == "http_header" else ""
    seen: dict[str, int] = {}
    forwarded: dict[str, str] = {}
    for name, value in call.headers:
        seen[name] = seen.get(name, 0) + 1
        if name in proxy_added:
            continue  # added by the deployment's own reverse proxy: dropped, never forwarded
        if name in SMUGGLING or name.startswith(SMUGGLING_PREFIXES) or (own_header and name == own_header):
            _refuse(agent, call, f"the header {name} is never passed to the target", kind=f"header {name}")
        if name == "connection" and not _plain_connection(value):
            _refuse(agent, call, "the Connection header names other headers (hop-by-hop)", kind="header connection")
        if name == "host" and not validate_host(split_domain_port(value)[0], settings.ALLOWED_HOSTS):
            _refuse(agent, call, "the Host header names another site", kind="header host")
        if name in allowed:
            forwarded[name] = f"{forwarded[name]}, {value}" if name in forwarded else value
    for name in ("authorization", "host"):
        if seen.get(name, 0) > 1:
            _refuse(agent, call, f"a second {name.title()} header", kind=f"header {name} twice")
    return forwarded


def _plain_connection(value: str) -> bool:
    return all(token.strip().lower() in ("keep-alive", "close", "") for token in value.split(","))


def _query(query_string: str) -> dict[str, str]:
    return _fields(query_string, what="query parameter", field="query")


def _fields(text: str, *, what: str, field: str) -> dict[str, str]:
    """A query string or form body as names and values: each name once (the target could read either of two),
    UTF-8, and no NUL (which no stored parameter can hold); anything else is refused, naming ``what``."""
    if not text:
        return {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput(f"A {what} is not valid UTF-8.", errors={field: ["not UTF-8"]}) from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise InvalidInput(
                f"The {what} {name!r} is given twice; the gateway passes each one once.",
                errors={field: [f"{name} given twice"]},
            )
        if "\x00" in name or "\x00" in value:
            raise InvalidInput(f"A {what} contains a NUL character.", errors={field: ["NUL character"]})
        fields[name] = value
    return fields


def _body(call: GatewayCall) -> dict[str, Any]:
    if not call.body:
        return {}
    types = call.header_values("content-type")
    content_type = types[0].split(";")[0].strip().lower() if types else ""
    if JSON_TYPES.fullmatch(content_type):
        try:
            return {"json": load_json(call.body)}
        except BadJSON as exc:
            raise InvalidInput(str(exc), errors={"body": [str(exc)]}) from None
    if content_type == FORM_TYPE:
        try:
            text = call.body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("The form is not valid UTF-8.", errors={"body": ["not UTF-8"]}) from None
        form = _fields(text, what="form field", field="body")
        return {"form": form} if form else {}
    raise GatewayRefusal(
        f"A {content_type or 'untyped'} body does not pass the gateway: send JSON or a form "
        f"(application/x-www-form-urlencoded).",
        status=415,
        title="Unsupported media type",
        slug="unsupported-media-type",
    )


def _replayed(agent: Agent, call: GatewayCall, proposal: Proposal, action_id: uuid.UUID) -> ActionRequest:
    """The held action this identical request named; anything else is refused and audited."""
    action = ActionRequest.objects.filter(id=action_id, agent=agent, action_type=ACTION_TYPE).first()
    if action is None or action.request_digest != proposal.digest():
        record_refusal(
            actor=Actor.agent(agent, via=call.via),
            verb="gateway.refused",
            kind="replay of another request",
            reason="Countersign-Action names an action this request is not",
            object_type="agent",
            object_id=str(agent.id),
            agent_name=agent.name,
            data={"named_action": str(action_id), "method": call.method, "path": call.path[:200]},
        )
        raise Conflict(
            "Countersign-Action names an action this request is not: repeat the identical request "
            "(same method, path, query, headers and body), or leave the header out to propose a new one."
        )
    return action


def _refuse(agent: Agent, call: GatewayCall, reason: str, *, kind: str) -> None:
    record_refusal(
        actor=Actor.agent(agent, via=call.via),
        verb="gateway.refused",
        kind=kind,
        reason=reason,
        object_type="credential",
        object_id=call.credential[:64],
        agent_name=agent.name,
        data={"method": call.method[:16], "path": call.path[:200]},
    )
    raise GatewayRefusal(f"Refused: {reason}.")


def is_settled(action: ActionRequest) -> bool:
    """Nothing more will happen to the call: it was refused, or it ran (or may have)."""
    return action.status not in (ActionStatus.PENDING, ActionStatus.APPROVED, ActionStatus.EXECUTING)
