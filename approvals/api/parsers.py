"""JSON parsing that refuses what would hurt later: huge, deep, NUL-laden or non-UTF-8 bodies."""

from __future__ import annotations

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from approvals.validation import MAX_JSON_DEPTH, BadJSON, load_json

MAX_BODY_BYTES = 256 * 1024
MAX_DEPTH = MAX_JSON_DEPTH


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is larger than 256 KiB."
    default_code = "body_too_large"


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        # The ASGI guard (approvals.web.middleware.RequestGuard) already refused larger bodies before reading them;
        # this bound holds for any other way in (the test client, another server).
        raw = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        try:
            return load_json(raw)
        except BadJSON as exc:
            raise ParseError(str(exc).replace("Not valid JSON", "The body is not valid JSON")) from None
