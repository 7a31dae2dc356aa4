"""``http.request``: one HTTP call to an internal API behind a stored credential."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any
from urllib.parse import quote

import httpx

from approvals.action_types import transport
from approvals.credentials.redaction import Redactor, wire_values
from catalog.base import ActionType, ExecutionError, ParamsRejected, Preview, Reverse, shorten
from catalog.risk import Risk

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
IDEMPOTENT_METHODS = ("GET", "PUT", "DELETE")  # RFC 9110, 9.2.2
# What each method does to the resource at the path (RFC 9110, 9.3), in a reviewer's words.
METHOD_WORDS = {
    "GET": "reads it, changes nothing",
    "POST": "creates a resource (or triggers an operation)",
    "PUT": "replaces the resource with the body",
    "PATCH": "changes part of the resource",
    "DELETE": "deletes the resource",
}
FORBIDDEN_HEADERS = {"authorization", "cookie", "host", "idempotency-key", "proxy-authorization", "x-api-key"}
MAX_RESPONSE_CHARS = 64 * 1024


def target_url(base_url: str, path: str) -> httpx.URL:
    """Join ``path`` under ``base_url``; raise ValueError if it would leave it."""
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError("must start with a single '/'")
    if any(ch in path for ch in ("\\", "#", "?", "@")) or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in path):
        raise ValueError(
            "must not contain '\\', '#', '?', '@', spaces or control characters (use `query` for a query string)"
        )
    segments = path.split("/")
    if any(seg in (".", "..") or seg.lower() in ("%2e", "%2e%2e", ".%2e", "%2e.") for seg in segments):
        raise ValueError("must not contain '.' or '..' segments")
    base = httpx.URL(base_url.rstrip("/") + "/")
    url = httpx.URL(base_url.rstrip("/") + path)
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port) or not (url.path + "/").startswith(
        base.path
    ):
        raise ValueError("leaves the credential's base URL")
    return url


class ScopedHttpClient:
    """Performs exactly one approved method on one approved URL under the credential's base URL."""

    def __init__(
        self,
        *,
        url: httpx.URL,
        method: str,
        auth_headers: dict[str, str],
        secret: str | None,
        idempotency_key: str = "",
        kind: str = "",
    ):
        self._url = url
        self._method = method
        self._auth_headers = auth_headers
        # Every secret-bearing value this client puts on the wire: the header values exactly as sent
        # ("Bearer X", "Basic base64(user:pass)"), the secret, and for basic auth the password alone.
        self._redactor = Redactor(frozenset(wire_values(kind, secret) | {v for v in auth_headers.values() if v}))
        self._fixed_headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        self.reads: list[str] = []  # "GET /path" of each preview read, for the action's timeline

    @property
    def url(self) -> str:
        return str(self._url)

    @property
    def method(self) -> str:
        return self._method

    @property
    def redactor(self) -> Redactor:
        """Scrubs every form of the secret-bearing values this client sends (approvals.credentials.redaction)."""
        return self._redactor

    def redact(self, text: str) -> str:
        return self._redactor.text(text)

    def _send(self, method: str, *, query=None, json_body=None, form=None, headers=None) -> httpx.Response:
        """Raises ExecutionError, with ``outcome_unknown`` when the request may have taken effect (transport)."""
        return transport.send(
            method,
            self._url,
            what=f"{self._url.scheme}://{self._url.netloc.decode()}{self._url.path}",
            params=query or None,
            json=json_body,
            data=form,
            headers={**(headers or {}), **self._fixed_headers, **self._auth_headers},
        )

    def send(self, *, query=None, json_body=None, form=None, headers=None) -> httpx.Response:
        return self._send(self._method, query=query, json_body=json_body, form=form, headers=headers)

    def read_current(self, *, query=None) -> httpx.Response:
        """GET the same resource, for previews (read access only): the one URL the execution would use."""
        self.reads.append(f"GET {self._url.path}")
        return self._send("GET", query=query)


def auth_headers(kind: str, secret: str | None, scope: dict[str, Any]) -> dict[str, str]:
    if not secret:
        return {}
    if kind == "http_bearer":
        return {"Authorization": f"Bearer {secret}"}
    if kind == "http_basic":
        import base64

        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    if kind == "http_header":
        return {str(scope.get("header", "X-Api-Key")): secret}
    return {}


class HttpRequest(ActionType):
    name = "http.request"
    title = "HTTP request"
    description = (
        "One HTTP call to an internal API. The base URL and the secret come from a credential stored in "
        "Countersign; the agent names the credential and never sees the secret."
    )
    risk = Risk.MEDIUM
    credential_kinds = ("http_bearer", "http_basic", "http_header")
    result_parts = {"status_code": "status", "headers": "headers", "body": "body"}
    preview_reads = True
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["credential", "method", "path"],
        "properties": {
            "credential": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Name of the stored credential.",
            },
            "method": {"type": "string", "enum": list(METHODS)},
            "path": {
                "type": "string",
                "minLength": 1,
                "maxLength": 2048,
                "description": "Path under the credential's base URL, starting with '/'.",
            },
            "query": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 2048},
                "maxProperties": 50,
            },
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 2048},
                "maxProperties": 20,
            },
            "json": {"description": "JSON body to send."},
            "form": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 65536},
                "maxProperties": 100,
                "description": "Form fields to send as an application/x-www-form-urlencoded body (not with json).",
            },
        },
    }

    def reverse(
        self, params: dict[str, Any], result: dict[str, Any], before: dict[str, Any] | None, credential
    ) -> Reverse | None:
        """Undo only where the credential defines the reverse call: ``scope.reverse_calls`` lists
        ``{"method": "POST", "path": "/users", "reverse_method": "DELETE", "reverse_path": "/users/{id}"}``
        (``path`` may be a shell-style pattern); ``{name}`` is filled from the top-level field of the JSON the
        call answered (URL-quoted). A call that did not answer 2xx, or lacks a field, has no reverse."""
        scope = getattr(credential, "scope", None)
        templates = scope.get("reverse_calls") if isinstance(scope, dict) else None
        status = result.get("status_code")
        if not isinstance(templates, list) or not isinstance(status, int) or not 200 <= status < 300:
            return None
        body = result.get("body") if isinstance(result.get("body"), dict) else {}
        for template in templates:
            if not isinstance(template, dict) or str(template.get("method", "")).upper() != params.get("method"):
                continue
            if not fnmatch.fnmatchcase(str(params.get("path", "")), str(template.get("path", ""))):
                continue
            method = str(template.get("reverse_method", "")).upper()
            path = _fill(str(template.get("reverse_path", "")), body)
            if method not in METHODS or path is None or not path.startswith("/"):
                return None
            undo = {"credential": params["credential"], "method": method, "path": path}
            return Reverse(
                self.name,
                undo,
                f"{method} {shorten(path, 80)}: the reverse of {params['method']} {shorten(params['path'], 80)}",
            )
        return None

    def describe(self, params: dict[str, Any]) -> str:
        method = str(params.get("method") or "").upper()
        return f"{method} to {shorten(params.get('path') or '/', 80)}: {METHOD_WORDS.get(method, 'an HTTP call')}"

    def check_params(self, params: dict[str, Any], credential) -> None:
        errors: dict[str, list[str]] = {}
        if credential is not None:
            try:
                target_url(str(credential.scope.get("base_url", "")), params["path"])
            except ValueError as exc:
                errors["path"] = [f"Path {exc}."]
            allowed = credential.scope.get("methods")
            if allowed and params["method"] not in allowed:
                errors["method"] = [f"The credential allows only {', '.join(allowed)}."]
        bad = sorted(h for h in params.get("headers", {}) if h.lower() in FORBIDDEN_HEADERS)
        if bad:
            errors["headers"] = [f"Header(s) {', '.join(bad)} are set by Countersign, not the agent."]
        if "json" in params and "form" in params:
            errors["form"] = ["Send a JSON body or form fields, not both."]
        if errors:
            raise ParamsRejected(errors)

    def is_idempotent(self, params: dict[str, Any]) -> bool:
        return params.get("method") in IDEMPOTENT_METHODS

    def make_client(self, credential, params: dict[str, Any], *, idempotency_key: str) -> ScopedHttpClient:
        if credential is None:
            raise ExecutionError("no credential")
        url = target_url(str(credential.scope.get("base_url", "")), params["path"])
        secret = credential.reveal()
        return ScopedHttpClient(
            url=url,
            method=params["method"],
            auth_headers=auth_headers(credential.kind, secret, credential.scope),
            secret=secret,
            idempotency_key=idempotency_key,
            kind=credential.kind,
        )

    def execute(self, params: dict[str, Any], client: ScopedHttpClient) -> dict[str, Any]:
        response = client.send(
            query=params.get("query"),
            json_body=params.get("json"),
            form=params.get("form"),
            headers=params.get("headers"),
        )
        body = _body(response, client)
        # Everything the target answered; the credential's result_visibility decides what is kept
        # (approvals.services.execution, through result_parts). The request headers are never part of it.
        answered = {"status_code": response.status_code, "headers": _headers(response, client), "body": body}
        if response.status_code >= 400:
            raise ExecutionError(
                f"{client.method} {client.url} answered {response.status_code}",
                permanent=response.status_code < 500,
                details=answered,
            )
        return answered

    def preview(self, params: dict[str, Any], client: ScopedHttpClient) -> Preview:
        if params["method"] not in ("PUT", "PATCH", "DELETE"):
            return Preview(kind="none", title=f"{params['method']} {client.url}")
        try:
            current = client.read_current(query=params.get("query"))
        except ExecutionError as exc:
            return Preview(kind="unavailable", error=f"could not read the current resource: {exc.message}")
        if current.status_code >= 400:
            return Preview(kind="unavailable", error=f"GET {client.url} answered {current.status_code}")
        before = _body(current, client)
        after = None if params["method"] == "DELETE" else params.get("json", params.get("form"))
        if params["method"] == "PATCH" and isinstance(before, dict) and isinstance(after, dict):
            after = {**before, **after}
        return Preview(kind="json", title=f"{params['method']} {client.url}", before=before, after=after)


def _headers(response: httpx.Response, client: ScopedHttpClient) -> dict[str, str]:
    return {client.redact(k.lower()): client.redact(v) for k, v in response.headers.items()}


def _body(response: httpx.Response, client: ScopedHttpClient) -> Any:
    text = client.redact(response.text[:MAX_RESPONSE_CHARS])
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _fill(template: str, values: dict[str, Any]) -> str | None:
    """``template`` with each ``{name}`` replaced by ``values[name]`` (a string or an integer, URL-quoted);
    None when one is missing."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        found = values.get(match.group(1))
        if isinstance(found, bool) or not isinstance(found, str | int) or found == "":
            missing = True
            return ""
        return quote(str(found), safe="")

    filled = _PLACEHOLDER.sub(value, template)
    return None if missing else filled
