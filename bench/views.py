"""The floor for ``POST /api/v1/actions``: the same server, middleware, DRF, JSON parser and agent-key
authentication, and one INSERT of the body. Everything the real endpoint does beyond this is its own cost."""

from __future__ import annotations

import json

from django.db import connection
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.authentication import AgentKeyAuthentication
from bench.common import FLOOR_TABLE


class FloorView(APIView):
    authentication_classes = [AgentKeyAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes: list = []

    def post(self, request):
        body = request.data
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {FLOOR_TABLE} (agent_id, body) VALUES (%s, %s) RETURNING id",
                [request.user.id, json.dumps(body)],
            )
            (row_id,) = cursor.fetchone()
        return Response({"id": row_id, "status": "stored"}, status=201)
