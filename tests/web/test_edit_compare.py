"""The live check of an edit, asked for the comparison (compare=1, static/js/edit_form.js): the edit against the
agent's proposal and the preview recomputed from the edit against the target now, for accepted edits only."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from tests.factories import AgentFactory, propose

pytestmark = pytest.mark.django_db

ON_DISK = "server {\n    listen 443 ssl;\n    proxy_pass http://backend:8080;\n}\n"
PROPOSED = ON_DISK.replace("backend:8080", "canary:8080")


@pytest.fixture
def config_action(owner):
    folder = f"edit-compare-{uuid.uuid4().hex[:8]}"
    conf = Path(settings.COUNTERSIGN_FILE_ROOT) / folder / "nginx.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(ON_DISK)
    agent = AgentFactory(name="deploy-bot", owner=owner, allow=["file.write"])
    params = {"path": f"{folder}/nginx.conf", "content": PROPOSED, "mode": "replace"}
    return propose(agent, "file.write", params, summary="Point at the canary"), params


def check(client, action, params, **extra):
    response = client.post(
        f"/actions/{action.id}/check-params", {"params": json.dumps(params), **extra}, HTTP_X_REQUESTED_WITH="fetch"
    )
    assert response.status_code == 200
    return response.json()


def test_an_accepted_edit_comes_back_beside_the_proposal_and_the_target(reviewer, config_action):
    action, params = config_action
    client = Client()
    client.force_login(reviewer)
    edited = {**params, "content": PROPOSED.replace("canary:8080", "canary:8443")}

    result = check(client, action, edited, compare="1")
    assert (result["ok"], result["changed"]) == (True, True)
    text = re.sub(r"<[^>]+>", "", result["compare_html"])  # words are marked inside a line: read the text
    against_proposal, against_target = text.split("What your edit will change on the target")
    assert "params.content" in against_proposal and "canary:8080" in against_proposal and "8443" in against_proposal
    assert "backend:8080" in against_target and "8443" in against_target  # the file on disk, then the edit
    assert result["preview"] == {"kind": "text", "will_fail": False, "failure": ""}

    # The mode from the select: the recomputed preview knows `create` will fail on an existing file.
    failing = check(client, action, {**edited, "mode": "create"}, compare="1")
    assert failing["ok"] is True and failing["preview"]["will_fail"] is True
    assert "Execution will fail" in failing["compare_html"] and "params.mode" in failing["compare_html"]


def test_nothing_is_compared_for_a_refused_or_unchanged_edit_or_without_asking(reviewer, config_action):
    action, params = config_action
    client = Client()
    client.force_login(reviewer)
    refused = check(client, action, {**params, "mode": "truncate"}, compare="1")
    assert refused["ok"] is False and "params.mode" in refused["errors"]
    assert "compare_html" not in refused  # refused parameters are never read against the target
    assert "compare_html" not in check(client, action, params, compare="1")  # no edit: the page's preview stands
    plain = check(client, action, {**params, "content": "x\n"})
    assert plain["ok"] is True and "compare_html" not in plain
