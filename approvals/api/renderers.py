"""The API's JSON, as DRF's JSONRenderer writes it, written by orjson.

Rendering a presented action with the standard library's encoder (and DRF's encoder class for what it cannot
write) was a tenth of an agent's read (docs/BENCHMARKS.md). The bytes are the same: compact, UTF-8, U+2028 and
U+2029 escaped so the output stays a JavaScript subset; datetimes, decimals and anything orjson does not write
itself go through DRF's encoder, so they are spelled as before.
"""

from __future__ import annotations

import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
# Keys that are not strings (an integer key in an executor's result): orjson writes them only with this option, which
# doubles its time for every document, so it is asked for only when a document has one.
_NON_STR_KEYS = _OPTIONS | orjson.OPT_NON_STR_KEYS
_fallback = JSONEncoder()


class APIJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        if self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)  # pretty-printed on request
        return render_json(data)


def render_json(data) -> bytes:
    """The API's compact JSON for ``data`` (also the ``wait`` view's and approvals.api.agent_reads')."""
    try:
        rendered = orjson.dumps(data, default=_fallback.default, option=_OPTIONS)
    except TypeError:  # orjson's JSONEncodeError: a key that is not a string, or what it refuses
        try:
            rendered = orjson.dumps(data, default=_fallback.default, option=_NON_STR_KEYS)
        except TypeError:  # what orjson refuses (an integer beyond 64 bits): as before
            return JSONRenderer().render(data)
    # U+2028 and U+2029 begin with the byte E2 in UTF-8, found by memchr; searching a page of fifty actions for the
    # two three-byte sequences took twice as long as writing it.
    if b"\xe2" in rendered:
        rendered = rendered.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return rendered
