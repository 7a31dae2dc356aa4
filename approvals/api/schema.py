"""OpenAPI additions for what is not a DRF view (the async long-poll), and the Swagger UI page."""

from __future__ import annotations

import threading

from django.templatetags.static import static
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

_ONE_SCHEMA_AT_A_TIME = threading.Lock()


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema, built one request at a time.

    drf-spectacular loads its extensions lazily, on the first schema built, and two first requests at once race
    there: one finds an extension the other has just marked absent (None) and answers 500. The schema is asked
    for rarely, so waiting for the one being built costs nothing that matters."""

    def _get_schema_response(self, request):
        with _ONE_SCHEMA_AT_A_TIME:
            return super()._get_schema_response(request)


class SwaggerView(SpectacularSwaggerSplitView):
    """The API docs page. No OPTIONS metadata: DRF rendered it through the page's template renderer, which has no
    template for it (a 500); now OPTIONS is a 405 like any other method the page does not take."""

    metadata_class = None

    # Through the staticfiles storage, not SWAGGER_UI_DIST's literal path: in production that is the hashed,
    # compressed, long-cached name (config/settings/production.py); in development the plain one.
    @staticmethod
    def _swagger_ui_resource(filename: str) -> str:
        return static(f"vendor/swagger-ui/{filename}")

    @staticmethod
    def _swagger_ui_favicon() -> str:
        return static("vendor/swagger-ui/favicon-32x32.png")


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
                        (405, "Any method but GET (the answer names it in Allow)"),
                        (429, "This agent key is over its request rate"),
                    ]
                },
            },
        }
    }
    return result
