"""OpenAPI additions for what is not a DRF view (the async long-poll)."""

from __future__ import annotations


def add_wait_endpoint(result, generator, request, public):
    result.setdefault("paths", {})["/api/v1/actions/{action_id}/wait"] = {
        "get": {
            "operationId": "wait_for_action",
            "summary": "Long-poll until the action is decided or finished",
            "description": (
                "Returns as soon as the action is decided (`until=decision`) or finished (`until=completion`, "
                "the default), or after `timeout` seconds (at most 60) with its current state."
            ),
            "tags": ["actions"],
            "parameters": [
                {"name": "action_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}},
                {
                    "name": "timeout",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 30},
                },
                {
                    "name": "until",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["decision", "completion"], "default": "completion"},
                },
            ],
            "security": [{"agentKey": []}, {"reviewerToken": []}, {"cookieAuth": []}],
            "responses": {
                "200": {
                    "description": "The action",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActionOutput"}}},
                },
                **{
                    str(code): {
                        "description": desc,
                        "content": {
                            "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemOutput"}}
                        },
                    }
                    for code, desc in [
                        (400, "Invalid input"),
                        (401, "Not authenticated"),
                        (404, "Not found"),
                        (429, "This agent key is over its request rate"),
                    ]
                },
            },
        }
    }
    return result
