"""An upstream written with the ``mcp`` package, over streamable HTTP on loopback (tests/gateway/mcp_http_upstream.py),
answering only requests that carry its secret header. Staff register it in the admin with that header, which is
stored encrypted and never rendered back; the agent never sees it, not even when the careless upstream echoes it
in a tool's answer; and the upstream's claim that a destructive tool is read-only is not believed unless staff
opt in to trusting its annotations."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from agents.services import grant_capability
from approvals import services
from approvals.action_types.mcp_client import UpstreamError
from approvals.models import ActionRequest, ActionStatus, McpUpstream
from approvals.policies import store as policy_store
from approvals.services.mcp_upstreams import create_upstream, refresh_tools, rotate_upstream_keys, update_upstream
from audit.models import AuditEvent
from tests.conftest import ARTIFACTS, token_client
from tests.factories import CLI, AgentFactory
from tests.gateway.mcp_support import STAFF, call_body
from tests.support.servers import free_port, start_mcp_http

pytestmark = pytest.mark.django_db
UPSTREAM_TOKEN = "upstream-tok-9f8e7d6c5b4a-never-shown"
SCRIPT = Path(__file__).with_name("mcp_http_upstream.py")


@pytest.fixture(scope="module")
def upstream_url():
    port = free_port()
    server, url = start_mcp_http(
        "mcp-careless-upstream", [sys.executable, str(SCRIPT), str(port), UPSTREAM_TOKEN], port, ARTIFACTS / "logs"
    )
    yield url
    server.stop()


@pytest.fixture
def careless(upstream_url):
    upstream = create_upstream(
        name="careless",
        transport="http",
        url=upstream_url,
        headers={"X-Upstream-Token": UPSTREAM_TOKEN},
        description="an upstream that repeats what it is sent",
        actor=STAFF,
    )
    return refresh_tools(upstream=upstream, actor=STAFF)


@pytest.fixture
def agent(owner):
    agent = AgentFactory(name="http-tools", owner=owner, allow=[])
    grant_capability(agent=agent, action_type="mcp.careless.*", actor=CLI)
    return agent


@pytest.fixture
def agent_api(agent):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent.raw_key}")
    return client


@pytest.fixture
def staff_browser():
    admin = User.objects.create_superuser("ada", "ada@example.com", "pw-ada")
    client = Client()
    client.force_login(admin)
    return client


def test_the_upstream_is_reached_over_http_with_the_stored_header_and_refuses_anyone_without(careless, upstream_url):
    assert sorted(t["name"] for t in careless.tools) == ["echo_request", "slow", "wipe", "wiped"]
    wipe = careless.tool("wipe")
    assert wipe["description"] == "Deletes every record of the named table."
    assert wipe["input_schema"]["required"] == ["table"]
    assert wipe["annotations"] == {"readOnlyHint": True}

    bare = create_upstream(name="bare", transport="http", url=upstream_url, actor=STAFF)
    with pytest.raises(UpstreamError, match="bare could not be reached"):
        refresh_tools(upstream=bare, actor=STAFF)
    assert McpUpstream.objects.get(name="bare").tools == []


def test_staff_register_it_in_the_admin_and_the_header_is_write_only(staff_browser, upstream_url):
    added = staff_browser.post(
        "/admin/approvals/mcpupstream/add/",
        {
            "name": "careless",
            "description": "repeats what it is sent",
            "transport": "http",
            "command": "",
            "args": "[]",
            "url": upstream_url,
            "env": "",
            "headers": f'{{"X-Upstream-Token": "{UPSTREAM_TOKEN}"}}',
            "enabled": "on",
            "timeout_seconds": "20",
        },
        follow=True,
    )
    assert added.status_code == 200
    assert "4 tools listed" in added.content.decode(), added.content.decode()[:3000]
    upstream = McpUpstream.objects.get(name="careless")
    assert upstream.secret_names == {"env": [], "headers": ["X-Upstream-Token"]}
    assert UPSTREAM_TOKEN.encode() not in bytes(upstream.secrets_encrypted)

    page = staff_browser.get(f"/admin/approvals/mcpupstream/{upstream.pk}/change/").content.decode()
    assert "X-Upstream-Token" in page and UPSTREAM_TOKEN not in page
    assert "careless.wipe" in page and "Deletes every record" in page
    # Saving the settings without typing the headers again keeps them.
    kept = staff_browser.post(
        f"/admin/approvals/mcpupstream/{upstream.pk}/change/",
        {
            "description": "changed",
            "transport": "http",
            "command": "",
            "args": "[]",
            "url": upstream_url,
            "env": "",
            "headers": "",
            "enabled": "on",
            "timeout_seconds": "20",
        },
        follow=True,
    )
    assert "4 tools listed" in kept.content.decode()
    events = AuditEvent.objects.filter(object_type="mcp_upstream").order_by("seq")
    assert [e.verb for e in events][:2] == ["mcp_upstream.created", "mcp_upstream.tools_listed"]
    assert "mcp_upstream.changed" in [e.verb for e in events]
    assert all(UPSTREAM_TOKEN not in str(e.data) for e in events)


def test_the_agent_never_sees_the_upstreams_secret_even_when_the_upstream_echoes_it(
    careless, agent, agent_api, reviewer
):
    listing = agent_api.get("/api/v1/mcp/tools")
    assert sorted(t["name"] for t in listing.json()["tools"]) == [
        "careless.echo_request",
        "careless.slow",
        "careless.wipe",
        "careless.wiped",
    ]
    assert UPSTREAM_TOKEN not in listing.content.decode()

    created = agent_api.post("/api/v1/actions", call_body("echo_request", "careless"), format="json")
    assert created.status_code == 201, created.content
    action_id = created.json()["id"]
    # The upstream calls itself read-only; nobody said to believe it: medium risk, held by the default rule.
    assert created.json()["status"] == "pending" and created.json()["risk"] == "medium"
    token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    assert services.execute_action(action_id) == ActionStatus.SUCCEEDED

    seen = agent_api.get(f"/api/v1/actions/{action_id}")
    echoed = seen.json()["result"]["content"][0]["text"]
    assert '"x-upstream-token": "[redacted]"' in echoed
    assert '"mcp-name": "echo_request"' in echoed  # it is the upstream's answer
    assert UPSTREAM_TOKEN not in seen.content.decode()
    assert UPSTREAM_TOKEN not in str(ActionRequest.objects.get(id=action_id).result)
    assert all(UPSTREAM_TOKEN not in str(e.data) for e in AuditEvent.objects.all())


def test_a_forged_read_only_annotation_is_believed_only_when_staff_opt_in(careless, agent, agent_api, reviewer):
    policy_store.save_rule(
        {"name": "low-risk-runs", "action_type": "mcp.tool_call", "effect": "auto_approve", "risks": ["low"]},
        actor=STAFF,
    )
    held = agent_api.post("/api/v1/actions", call_body("wipe", "careless", table="users"), format="json")
    assert held.status_code == 201, held.content
    assert held.json()["status"] == "pending" and held.json()["risk"] == "medium"

    # The reviewer sees the tool, what it says it does, the arguments, and that the claim is not trusted.
    preview = token_client(reviewer).get(f"/api/v1/actions/{held.json()['id']}/preview").json()
    assert preview["after"] == {"table": "users"}
    assert "What the server says it does: Deletes every record of the named table." in preview["notes"]
    assert "Annotations: readOnlyHint (not trusted: the server's own claim)" in preview["notes"]
    assert services.execute_action(held.json()["id"]) == ActionStatus.PENDING

    # Staff choose to trust this upstream's annotations: now the rule for low risk applies, as they asked.
    update_upstream(upstream=careless, actor=STAFF, trust_annotations=True)
    trusted = agent_api.post("/api/v1/actions", call_body("wipe", "careless", table="logs"), format="json")
    assert trusted.json()["status"] == "approved" and trusted.json()["risk"] == "low"
    assert trusted.json()["policy"]["rule"] == "low-risk-runs"
    assert services.execute_action(trusted.json()["id"]) == ActionStatus.SUCCEEDED
    result = ActionRequest.objects.get(id=trusted.json()["id"]).result
    assert result["content"][0]["text"] == "wiped logs" and result["structured_content"] == {"result": "wiped logs"}


def test_the_stored_header_survives_a_key_rotation_and_the_old_key_retiring(careless, settings):
    old = list(settings.COUNTERSIGN_CREDENTIAL_KEYS)
    new = Fernet.generate_key().decode()
    settings.COUNTERSIGN_CREDENTIAL_KEYS = [new, *old]
    assert rotate_upstream_keys(actor=STAFF) == 1
    settings.COUNTERSIGN_CREDENTIAL_KEYS = [new]
    refreshed = refresh_tools(upstream=McpUpstream.objects.get(name="careless"), actor=STAFF)
    assert len(refreshed.tools) == 4
    assert AuditEvent.objects.filter(verb="mcp_upstream.keys_rotated", data__count=1).exists()


def test_a_call_the_upstream_does_not_answer_in_time_ends_unknown_and_a_tool_error_is_the_tools_answer(
    careless, agent_api, reviewer
):
    update_upstream(upstream=careless, actor=STAFF, timeout_seconds=2)
    created = agent_api.post("/api/v1/actions", call_body("slow", "careless", seconds=60), format="json")
    action_id = created.json()["id"]
    token_client(reviewer).post(f"/api/v1/actions/{action_id}/approve", {}, format="json")
    # It may have run: nobody knows, and nothing retries it by itself.
    assert services.execute_action(action_id) == ActionStatus.UNKNOWN
    result = ActionRequest.objects.get(id=action_id).result
    assert "did not answer within 2 s" in result["error"] and result["advice"] == "check the target before retrying"

    # A tool error is the tool's answer: the call ran and said it failed; the agent gets it as MCP hosts expect.
    created = agent_api.post("/api/v1/actions", call_body("slow", "careless", seconds="soon"), format="json")
    assert created.status_code == 400  # not a number: refused against the tool's input schema first
    McpUpstream.objects.filter(pk=careless.pk).update(
        tools=[*careless.tools, {**careless.tool("wiped"), "name": "ghost"}]
    )
    ghost = agent_api.post("/api/v1/actions", call_body("ghost", "careless"), format="json")
    ghost_id = ghost.json()["id"]
    token_client(reviewer).post(f"/api/v1/actions/{ghost_id}/approve", {}, format="json")
    assert services.execute_action(ghost_id) == ActionStatus.SUCCEEDED
    answer = ActionRequest.objects.get(id=ghost_id).result
    assert answer["is_error"] is True and "ghost" in answer["content"][0]["text"]
