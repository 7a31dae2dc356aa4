"""``Authorization: Bearer <key>`` as the humanlayer SDK sends it: an agent key, or a reviewer's token.

The SDK has one setting, ``HUMANLAYER_API_KEY``, always sent as a bearer token. Agents set it to
their Countersign agent key (``cs_...``); approver-side clients to a reviewer's personal token
(``csr_...``), which Countersign's own API takes as ``Authorization: Token``.
"""

from __future__ import annotations

from rest_framework import authentication, exceptions

from agents.authentication import authenticate_agent_key
from approvals.api.authentication import authenticate_reviewer_token


class HumanLayerBearerAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        raw = raw.strip()
        if raw.startswith("csr_"):
            found = authenticate_reviewer_token(raw)
            if found is None:
                raise exceptions.AuthenticationFailed("Invalid or revoked reviewer token.")
            return found
        key = authenticate_agent_key(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired agent key.")
        return key.agent, key

    def authenticate_header(self, request):
        return 'Bearer realm="countersign"'
