"""``scim.group_membership``: add or remove users in one group through SCIM 2.0 (RFC 7644).

The credential (kind ``scim_bearer``) holds the bearer token and, in its
scope, the service's base URL (``https://idp.example/scim/v2``). The agent
names users by ``userName`` and the group by id or ``displayName``; Countersign
resolves both with its own read access, shows reviewers the members before and
after, and on approval sends one PATCH of ``members`` on that one group.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import quote

import httpx

from approvals.action_types import transport
from approvals.action_types.durations import DurationError, describe_seconds, parse_duration
from approvals.action_types.http_request import target_url
from approvals.credentials.redaction import Redactor
from catalog.base import ActionType, ExecutionError, ParamsRejected, Preview, Reverse, plain_list, shorten
from catalog.risk import Risk

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_MEDIA_TYPE = "application/scim+json"
MAX_USERS = 50  # per list (add, remove)
MAX_MEMBERS_LISTED = 500  # beyond this a preview lists only the members that change
ID_FILTER_CHUNK = 50
MAX_DETAIL_CHARS = 500
NO_CONTROL_CHARS = "^[^\\u0000-\\u001f\\u007f]+$"


def _user_list(verb: str) -> dict[str, Any]:
    return {
        "type": "array",
        "maxItems": MAX_USERS,
        "uniqueItems": True,
        "items": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_CONTROL_CHARS},
        "description": f"userNames to {verb}.",
    }


def _filter_eq(attribute: str, value: str) -> str:
    # A SCIM filter's string literal is a JSON string (RFC 7644 §3.4.2.2).
    return f"{attribute} eq {json.dumps(value)}"


class ScimGroupClient:
    """Reads ``/Groups`` and ``/Users`` under the credential's base URL; writes only the members of one group.

    The group is the one ``group_ref`` (id or displayName) resolves to; the
    only write is a PATCH of its ``members`` built here from user ids.
    """

    def __init__(self, *, base_url: str, secret: str | None, group_ref: str):
        self._base = base_url.rstrip("/")
        self._headers = {"Accept": f"{SCIM_MEDIA_TYPE}, application/json"}
        if secret:
            self._headers["Authorization"] = f"Bearer {secret}"
        # The secret-bearing values this client puts on the wire, exactly as sent.
        self._redactor = Redactor(frozenset({secret, self._headers["Authorization"]} if secret else ()))
        self.reads: list[str] = []  # "GET /path" of each read, for the action's timeline when it is a preview
        self._group_ref = group_ref
        self._group: dict[str, Any] | None = None

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def redactor(self) -> Redactor:
        """Scrubs every form of the secret-bearing values this client sends (approvals.credentials.redaction)."""
        return self._redactor

    def redact(self, text: str) -> str:
        return self._redactor.text(text)

    # --- transport -----------------------------------------------------------------

    def _request(self, method: str, path: str, *, query=None, body=None) -> httpx.Response:
        try:
            url = target_url(self._base, path)
        except ValueError as exc:
            raise ExecutionError(f"refused to call {path!r}: it {exc}") from None
        headers = dict(self._headers)
        if method == "GET":
            self.reads.append(f"GET {url.path}")
        content = None
        if body is not None:
            headers["Content-Type"] = SCIM_MEDIA_TYPE
            content = json.dumps(body).encode()
        # The lookups are GETs: their failure changes nothing. The PATCH's, after it was sent, is an unknown outcome.
        return transport.send(
            method,
            url,
            what=f"the SCIM server at {self._base}",
            params=query or None,
            content=content,
            headers=headers,
        )

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 400:
            return
        detail = ""
        try:
            detail = str(response.json().get("detail") or "")
        except (ValueError, AttributeError):
            detail = response.text
        detail = self.redact(detail[:MAX_DETAIL_CHARS]).strip()
        if response.status_code in (401, 403):
            reason = f"the SCIM server refused the credential ({response.status_code})"
        else:
            reason = f"the SCIM server answered {response.status_code}"
        status = response.status_code
        raise ExecutionError(
            f"{what}: {reason}" + (f": {detail}" if detail else ""),
            permanent=status < 500 and status not in (408, 429),
            details={"status_code": status},
        )

    def _get(self, path: str, what: str, *, query=None, missing_ok: bool = False) -> dict[str, Any] | None:
        response = self._request("GET", path, query=query)
        if missing_ok and response.status_code == 404:
            return None
        self._check(response, what)
        try:
            data = response.json()
        except ValueError:
            raise ExecutionError(f"{what}: the SCIM server did not answer JSON", permanent=False) from None
        if not isinstance(data, dict):
            raise ExecutionError(f"{what}: the SCIM server answered an unexpected document", permanent=False)
        return data

    def _search(self, resource: str, filter_: str, what: str, *, count: int, attributes: str = "") -> list[dict]:
        query = {"filter": filter_, "count": str(count)}
        if attributes:
            query["attributes"] = attributes
        data = self._get(f"/{resource}", what, query=query) or {}
        resources = data.get("Resources") or []
        return [r for r in resources if isinstance(r, dict) and isinstance(r.get("id"), str)]

    # --- reads -----------------------------------------------------------------------

    def group(self, *, refresh: bool = False) -> dict[str, Any]:
        """The group ``group_ref`` names (by displayName, else by id), with its members."""
        if self._group is not None and not refresh:
            return self._group
        if self._group is None:
            ref = self._group_ref
            found = self._search(
                "Groups", _filter_eq("displayName", ref), f"looking up group {ref!r}", count=2, attributes="id"
            )
            if len(found) > 1:
                raise ExecutionError(f"more than one group is named {ref!r}; name the group by its id")
            group_id = found[0]["id"] if found else ref
            if group_id in (".", ".."):
                raise ExecutionError(f"no group with the displayName or id {ref!r}")
        else:
            group_id = self._group["id"]
        group = self._get(f"/Groups/{quote(group_id, safe='')}", f"reading group {group_id!r}", missing_ok=True)
        if group is None or group.get("id") != group_id:
            raise ExecutionError(f"no group with the displayName or id {self._group_ref!r}")
        self._group = group
        return group

    def find_users(self, user_names: list[str]) -> dict[str, dict[str, str]]:
        """``{requested userName: {"id", "userName"}}`` for the names the server knows."""
        found: dict[str, dict[str, str]] = {}
        for name in user_names:
            matches = self._search(
                "Users",
                _filter_eq("userName", name),
                f"looking up user {name!r}",
                count=2,
                attributes="userName,displayName,name",
            )
            if len(matches) == 1:
                found[name] = {
                    "id": matches[0]["id"],
                    "userName": str(matches[0].get("userName") or name),
                    "displayName": _display_name(matches[0]),
                }
            elif len(matches) > 1:
                raise ExecutionError(f"more than one user has the userName {name!r}")
        return found

    def user_names(self, ids: list[str]) -> dict[str, str]:
        """``{id: label}`` for the ids that are users: "Dana Smith (dana)", or the userName alone."""
        names: dict[str, str] = {}
        for start in range(0, len(ids), ID_FILTER_CHUNK):
            chunk = ids[start : start + ID_FILTER_CHUNK]
            filter_ = " or ".join(_filter_eq("id", i) for i in chunk)
            found = self._search(
                "Users", filter_, "reading members", count=len(chunk), attributes="userName,displayName,name"
            )
            for user in found:
                if user.get("userName"):
                    names[user["id"]] = _user_label(str(user["userName"]), _display_name(user))
        return names

    # --- the one write ---------------------------------------------------------------

    def patch_members(self, *, add_ids: list[str], remove_ids: list[str]) -> int:
        """One RFC 7644 PATCH of the resolved group's ``members``; returns the status code."""
        group = self.group()
        operations: list[dict[str, Any]] = []
        if add_ids:
            operations.append({"op": "add", "path": "members", "value": [{"value": i} for i in add_ids]})
        operations += [{"op": "remove", "path": f"members[{_filter_eq('value', i)}]"} for i in remove_ids]
        if not operations:
            return 0
        group_id = group["id"]
        response = self._request(
            "PATCH",
            f"/Groups/{quote(group_id, safe='')}",
            body={"schemas": [PATCH_OP], "Operations": operations},
        )
        self._check(response, f"changing the members of group {group.get('displayName') or group_id!r}")
        return response.status_code


def _display_name(user: dict[str, Any]) -> str:
    """The name a person is known by (SCIM ``displayName``, else ``name.formatted``), "" when the server has none."""
    name = user.get("name")
    formatted = name.get("formatted") if isinstance(name, dict) else None
    for value in (user.get("displayName"), formatted):
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    return ""


def _user_label(user_name: str, display_name: str) -> str:
    """How a member is listed: the userName decides what runs, so it is always shown."""
    return f"{display_name} ({user_name})" if display_name and display_name != user_name else user_name


def _member_ids(group: dict[str, Any]) -> list[str]:
    members = group.get("members") or []
    return [m["value"] for m in members if isinstance(m, dict) and isinstance(m.get("value"), str)]


def _member_labels(client: ScimGroupClient, group: dict[str, Any], ids: list[str]) -> dict[str, str]:
    """A line per member: the userName, else what the server calls it (nested groups, unknown ids)."""
    names = client.user_names(ids)
    wanted = set(ids)
    labels = {}
    for member in group.get("members") or []:
        if not isinstance(member, dict) or member.get("value") not in wanted:
            continue
        value = member["value"]
        if value in names:
            labels[value] = names[value]
        else:
            kind = str(member.get("type") or "member").lower()
            display = member.get("display")
            labels[value] = f"{display} ({kind} id {value})" if display else f"[{kind} id {value}]"
    return labels


def _person(user: dict[str, str]) -> dict[str, str]:
    return {"user_name": user["userName"], "display_name": user.get("displayName", "")}


def _sorted(lines) -> list[str]:
    return sorted(lines, key=lambda s: (s.lower(), s))


class ScimGroupMembership(ActionType):
    name = "scim.group_membership"
    title = "Change group membership (SCIM)"
    description = (
        "Add users to or remove users from one group in an identity provider or application, through SCIM 2.0 "
        "(RFC 7644 PATCH of the group's members). The SCIM base URL and bearer token come from a credential "
        "stored in Countersign. Users are named by userName, the group by id or displayName."
    )
    risk = Risk.HIGH
    modifies_access = True
    credential_kinds = ("scim_bearer",)
    idempotent = True
    result_parts = {"status_code": "status"}
    preview_reads = True
    # With ``duration``, Countersign removes the users it added when the duration ends (approvals.services.access).
    time_boxed = True
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["credential", "group"],
        "properties": {
            "credential": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Name of the stored scim_bearer credential.",
            },
            "group": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "pattern": NO_CONTROL_CHARS,
                "description": "The group's id or displayName.",
            },
            "add": _user_list("add to the group"),
            "remove": _user_list("remove from the group"),
            "duration": {
                "type": ["integer", "string"],
                "description": "For how long the users are added: whole seconds (7200) or an ISO 8601 duration "
                "(PT2H, P1D). When it ends Countersign removes the users it added (never those who were "
                "members before). Only with add, not remove. A policy or the credential may cap or require it.",
            },
        },
    }

    def describe(self, params: dict[str, Any]) -> str:
        group = shorten(params.get("group") or "the group", 60)
        add, remove = list(params.get("add") or []), list(params.get("remove") or [])
        parts = []
        if add:
            parts.append(f"add {plain_list(add)} to {group}")
        if remove:
            parts.append(f"remove {plain_list(remove)} from {group}")
        text = "; ".join(parts) or f"change nobody in {group}"
        if "duration" in params:
            # check_params refuses a malformed one; a description never raises.
            with contextlib.suppress(DurationError):
                text += f" for {describe_seconds(parse_duration(params['duration']))}"
        return text[0].upper() + text[1:]

    def check_params(self, params: dict[str, Any], credential) -> None:
        errors: dict[str, list[str]] = {}
        add, remove = params.get("add") or [], params.get("remove") or []
        if not add and not remove:
            errors["add"] = ["Name at least one userName to add or to remove."]
        both = sorted({n.lower() for n in add} & {n.lower() for n in remove})
        if both:
            errors["remove"] = [f"Both added and removed: {', '.join(both)}."]
        if "duration" in params:
            try:
                parse_duration(params["duration"])
            except DurationError as exc:
                errors["duration"] = [str(exc)]
            if remove:
                errors.setdefault("duration", []).append(
                    "A time-boxed change only adds users: propose removals without a duration."
                )
        if credential is not None:
            base_url = str(credential.scope.get("base_url", ""))
            if not base_url.lower().startswith(("http://", "https://")):
                errors["credential"] = ["The credential has no SCIM base_url."]
        if errors:
            raise ParamsRejected(errors)

    def is_idempotent(self, params: dict[str, Any]) -> bool:
        return True  # adding a member twice, or removing a non-member, changes nothing

    def record_before(self, params: dict[str, Any], client: ScimGroupClient) -> dict[str, Any] | None:
        """For a time-boxed grant: who was a member already, so that its revert never takes away what a person
        had before, even when the result is lost (an unknown outcome a reviewer later resolves as succeeded)."""
        if "duration" not in params:
            return None
        plan = self._plan(params, client)
        group = plan["group"]
        return {
            "group": {"id": group["id"], "displayName": group.get("displayName", "")},
            "already_members": [plan["users"][n]["userName"] for n in plan["already"]],
        }

    def reverse(
        self, params: dict[str, Any], result: dict[str, Any], before: dict[str, Any] | None, credential
    ) -> Reverse | None:
        """Remove whom it added and add back whom it removed. Only those it changed: a user who was already a
        member (``already_members``) is never in ``added``, so the reverse leaves them in the group. Without a
        result (an unknown outcome resolved as succeeded), from the state recorded before: the users it was to
        add who were not members then."""
        if "added" not in result and before and "already_members" in before and not params.get("remove"):
            already = {n.lower() for n in before["already_members"]}
            result = {
                "group": before.get("group"),
                "added": [n for n in params.get("add") or [] if n.lower() not in already],
            }
        added, removed = list(result.get("added") or []), list(result.get("removed") or [])
        group = result.get("group") or {}
        if not (added or removed) or not isinstance(group, dict) or not group.get("id"):
            return None
        reverse_params: dict[str, Any] = {"credential": params["credential"], "group": group["id"]}
        if removed:
            reverse_params["add"] = removed
        if added:
            reverse_params["remove"] = added
        name = shorten(group.get("displayName") or group["id"], 60)
        words = []
        if added:
            words.append(f"remove {plain_list(added)} from {name}")
        if removed:
            words.append(f"add {plain_list(removed)} back to {name}")
        summary = "; ".join(words)
        return Reverse(self.name, reverse_params, summary[0].upper() + summary[1:])

    def make_client(self, credential, params: dict[str, Any], *, idempotency_key: str) -> ScimGroupClient:
        if credential is None:
            raise ExecutionError("no credential")
        return ScimGroupClient(
            base_url=str(credential.scope.get("base_url", "")), secret=credential.reveal(), group_ref=params["group"]
        )

    def _plan(self, params: dict[str, Any], client: ScimGroupClient) -> dict[str, Any]:
        group = client.group()
        add, remove = params.get("add") or [], params.get("remove") or []
        users = client.find_users([*add, *remove])
        members = set(_member_ids(group))
        plan: dict[str, Any] = {
            "group": group,
            "users": users,
            "unknown": [n for n in [*add, *remove] if n not in users],
            "add": [n for n in add if n in users and users[n]["id"] not in members],
            "already": [n for n in add if n in users and users[n]["id"] in members],
            "remove": [n for n in remove if n in users and users[n]["id"] in members],
            "absent": [n for n in remove if n in users and users[n]["id"] not in members],
        }
        return plan

    def execute(self, params: dict[str, Any], client: ScimGroupClient) -> dict[str, Any]:
        plan = self._plan(params, client)
        group, users = plan["group"], plan["users"]
        if plan["unknown"]:
            raise ExecutionError(
                f"unknown user(s): {', '.join(plan['unknown'])}; nothing was changed",
                details={"unknown_users": plan["unknown"]},
            )
        status = client.patch_members(
            add_ids=[users[n]["id"] for n in plan["add"]], remove_ids=[users[n]["id"] for n in plan["remove"]]
        )
        try:
            members = set(_member_ids(client.group(refresh=True))) if status else set(_member_ids(group))
        except ExecutionError as exc:
            # The server accepted the PATCH; whether the members now show it could not be read back.
            raise ExecutionError(
                f"the SCIM server accepted the change ({status}) but reading the group back failed: {exc.message}",
                permanent=False,
                outcome_unknown=True,
                details={"status_code": status},
            ) from None
        missing = [n for n in plan["add"] if users[n]["id"] not in members]
        stayed = [n for n in plan["remove"] if users[n]["id"] in members]
        if missing or stayed:
            raise ExecutionError(
                "the SCIM server accepted the change but the group's members do not show it",
                permanent=False,
                details={"not_added": missing, "not_removed": stayed},
            )
        return {
            "group": {"id": group["id"], "displayName": group.get("displayName", "")},
            "added": [users[n]["userName"] for n in plan["add"]],
            "removed": [users[n]["userName"] for n in plan["remove"]],
            "already_members": [users[n]["userName"] for n in plan["already"]],
            "not_members": [users[n]["userName"] for n in plan["absent"]],
            "changed": bool(status),
            "status_code": status or None,
            "member_count": len(members),
        }

    def preview(self, params: dict[str, Any], client: ScimGroupClient) -> Preview:
        try:
            plan = self._plan(params, client)
            group, users = plan["group"], plan["users"]
            ids = _member_ids(group)
            changing = {users[n]["id"] for n in plan["add"] + plan["remove"]}
            partial = len(ids) > MAX_MEMBERS_LISTED
            labels = _member_labels(client, group, [i for i in ids if i in changing] if partial else ids)
        except ExecutionError as exc:
            return Preview(kind="unavailable", error=exc.message)
        before = dict(labels)
        after = {i: v for i, v in labels.items() if i not in {users[n]["id"] for n in plan["remove"]}}
        after.update({users[n]["id"]: _user_label(users[n]["userName"], users[n]["displayName"]) for n in plan["add"]})
        notes = []
        if plan["add"]:
            notes.append("adds: " + ", ".join(users[n]["userName"] for n in plan["add"]))
        if plan["remove"]:
            notes.append("removes: " + ", ".join(users[n]["userName"] for n in plan["remove"]))
        notes += [f"{users[n]['userName']} is already a member" for n in plan["already"]]
        notes += [f"{users[n]['userName']} is not a member" for n in plan["absent"]]
        notes += [f"unknown user: {n} (execution would fail; nothing would change)" for n in plan["unknown"]]
        if not plan["add"] and not plan["remove"] and not plan["unknown"]:
            notes.append("no change: the group already looks like this")
        if partial:
            notes.append(f"the group has {len(ids)} members; only those that change are listed")
        name = group.get("displayName") or group["id"]
        return Preview(
            kind="text",
            title=f"Members of {name}",
            before="\n".join(_sorted(before.values())),
            after="\n".join(_sorted(after.values())),
            notes=notes,
            semantic={
                "kind": "membership",
                "group": name,
                "added": [_person(users[n]) for n in plan["add"]],
                "removed": [_person(users[n]) for n in plan["remove"]],
                "unchanged": len(set(before) & set(after)),
            },
            # execute() refuses before any write when a user is unknown: say so first.
            will_fail=bool(plan["unknown"]),
            failure=f"Execution will fail: the SCIM server knows no user {plain_list(plan['unknown'])}; "
            "nothing would change."
            if plan["unknown"]
            else "",
        )
