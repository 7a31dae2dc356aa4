"""An upstream MCP server the gateway puts Countersign in front of (docs/gateway.md, "MCP upstreams").

Staff register it (approvals/admin/mcp.py through approvals/services/mcp_upstreams.py); agents see its tools as
``<name>.<tool>`` (approvals/gateway/mcp_tools.py) and call them as ``mcp.tool_call`` actions
(approvals/action_types/mcp_tool_call.py). Its environment and HTTP headers usually hold secrets (a token for
the system the server talks to): they are stored like a credential's secret, one Fernet token of
``{"env": {...}, "headers": {...}}`` (approvals.credentials.crypto), write-only; only their names are kept in
clear so that staff can see what is set.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

# The server's name is the first part of every tool name agents see (``git.git_status``) and of the capabilities
# that grant them (``mcp.git.*``): lower-case ASCII only, so that no other spelling can name the same server.
UPSTREAM_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,49}")
# Tool names as the MCP specification allows them; anything else an upstream lists is not offered to agents.
TOOL_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# Headers the gateway sets itself; an operator's header of these names would be confusing or ignored.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "accept", "mcp-session-id", "transfer-encoding"}
)
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")


class McpUpstream(models.Model):
    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio (a command Countersign runs)"
        HTTP = "http", "streamable HTTP (a URL)"

    name = models.CharField(
        max_length=50,
        unique=True,
        validators=[
            RegexValidator(
                f"^{UPSTREAM_NAME_RE.pattern}$",
                "Lower-case letters, digits, '-' and '_', starting with a letter or digit.",
            )
        ],
        help_text="Agents see its tools as <name>.<tool>; capabilities grant them as mcp.<name>.<tool>.",
    )
    description = models.TextField(blank=True, help_text="What this server reaches, for reviewers.")
    transport = models.CharField(max_length=8, choices=Transport.choices)
    command = models.CharField(max_length=500, blank=True, help_text="stdio: the executable to run.")
    args = models.JSONField(default=list, blank=True, help_text='stdio: its arguments, e.g. ["--repository", "/srv"].')
    url = models.CharField(max_length=2000, blank=True, help_text="http: the MCP endpoint, e.g. https://host/mcp.")
    secrets_encrypted = models.BinaryField(editable=False, default=b"")
    # The names of the stored environment variables and headers (never their values), for the admin page.
    secret_names = models.JSONField(default=dict, blank=True, editable=False)
    trust_annotations = models.BooleanField(
        default=False,
        help_text="Take this server's tool annotations at their word: a tool marked readOnlyHint is low risk and "
        "one marked destructiveHint high risk, so rules by risk apply to them. Off: every tool is medium risk, "
        "whatever the server claims.",
    )
    enabled = models.BooleanField(default=True)
    timeout_seconds = models.PositiveIntegerField(
        default=30, help_text="How long a connection, a tool listing or a tool call may take."
    )
    # The tools as last listed: [{"name", "title", "description", "input_schema", "annotations"}].
    tools = models.JSONField(default=list, blank=True, editable=False)
    tools_refreshed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP upstream"

    def __str__(self) -> str:
        return f"{self.name} ({self.transport})"

    def __repr__(self) -> str:
        # Never let the ciphertext reach a log or trace.
        return f"<McpUpstream {self.name} transport={self.transport}>"

    def clean(self) -> None:
        if self.transport == self.Transport.STDIO:
            if not self.command.strip():
                raise ValidationError({"command": "A stdio upstream needs the command to run."})
            if not isinstance(self.args, list) or not all(isinstance(a, str) and "\x00" not in a for a in self.args):
                raise ValidationError({"args": "A list of strings."})
        elif self.transport == self.Transport.HTTP:
            url = self.url.strip()
            if not url.lower().startswith(("http://", "https://")) or "#" in url or any(c.isspace() for c in url):
                raise ValidationError({"url": "An http:// or https:// URL, e.g. https://mcp.example.com/mcp."})

    def tool(self, name: str) -> dict | None:
        """The listed tool of exactly this name (case and every character count), or None."""
        for tool in self.tools or []:
            if tool.get("name") == name:
                return tool
        return None


def check_secret_maps(env: object, headers: object) -> dict[str, list[str]]:
    """What is wrong with an upstream's environment and headers (empty: nothing)."""
    errors: dict[str, list[str]] = {}
    for field, value, name_re in (("env", env, ENV_NAME_RE), ("headers", headers, HEADER_NAME_RE)):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            errors[field] = ["An object of names to string values."]
            continue
        bad = [k for k in value if not isinstance(k, str) or not name_re.fullmatch(k)]
        if bad:
            errors[field] = [f"Not a valid name: {', '.join(map(repr, bad))}."]
        elif field == "headers" and (reserved := sorted(k for k in value if k.lower() in RESERVED_HEADERS)):
            errors[field] = [f"Set by the gateway itself: {', '.join(reserved)}."]
        elif any(("\r" in v or "\n" in v or "\x00" in v) for v in value.values()):
            errors[field] = ["Values must not contain line breaks or NUL."]
    return errors
