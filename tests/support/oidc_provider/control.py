"""The provider's test controls: people and their groups, the client, and a misbehaving mode.

``mode`` makes the provider issue ID tokens a real attacker could bring: ``other-audience`` (issued for another
client) or ``foreign-key`` (signed by a key that is not in the provider's JWKS, under the provider's key id).
Guarded by a bearer token (OIDC_PROVIDER_CONTROL_TOKEN); the process only listens on loopback.
"""

from __future__ import annotations

import json

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.models import get_application_model
from oauth2_provider.oauth2_validators import OAuth2Validator

MODES = ("normal", "other-audience", "foreign-key")
_state = {"mode": "normal"}
_FOREIGN_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)


class DirectoryValidator(OAuth2Validator):
    # Every claim, whatever the scopes (a directory that always sends its groups claim, as Okta can be set to).
    oidc_claim_scope = None

    def get_additional_claims(self, request):
        user = request.user
        return {
            "email": user.email,
            # The tests' way of marking an address verified at the provider.
            "email_verified": user.last_name == "verified",
            "preferred_username": user.username,
            "groups": sorted(user.groups.values_list("name", flat=True)),
        }

    def finalize_id_token(self, id_token, token, token_handler, request):
        if _state["mode"] == "other-audience":
            id_token["aud"] = "another-client"
        signed = super().finalize_id_token(id_token, token, token_handler, request)
        if _state["mode"] == "foreign-key":
            header = jwt.get_unverified_header(signed)
            claims = jwt.decode(signed, options={"verify_signature": False})
            signed = jwt.encode(claims, _FOREIGN_KEY, algorithm="RS256", headers={"kid": header["kid"]})
        return signed


def _authorised(request) -> bool:
    token = settings.OIDC_PROVIDER_CONTROL_TOKEN
    return bool(token) and request.headers.get("Authorization") == f"Bearer {token}"


@csrf_exempt
def person(request):
    """Create or change a person: username, password, email, email_verified, groups (the full list)."""
    if request.method != "POST" or not _authorised(request):
        return HttpResponseForbidden()
    data = json.loads(request.body)
    user, _ = User.objects.get_or_create(username=data["username"])
    if "password" in data:
        user.set_password(data["password"])
    if "email" in data:
        user.email = data["email"]
    if "email_verified" in data:
        user.last_name = "verified" if data["email_verified"] else ""
    user.save()
    if "groups" in data:
        user.groups.set([Group.objects.get_or_create(name=name)[0] for name in data["groups"]])
    return JsonResponse({"sub": str(user.pk)})


@csrf_exempt
def client(request):
    """Register (or update) a confidential client for the authorization-code flow, RS256, no consent screen."""
    if request.method != "POST" or not _authorised(request):
        return HttpResponseForbidden()
    data = json.loads(request.body)
    Application = get_application_model()
    app = Application.objects.filter(client_id=data["client_id"]).first() or Application(client_id=data["client_id"])
    app.name = data["client_id"]
    app.client_secret = data["client_secret"]
    app.client_type = Application.CLIENT_CONFIDENTIAL
    app.authorization_grant_type = Application.GRANT_AUTHORIZATION_CODE
    app.redirect_uris = " ".join(data["redirect_uris"])
    app.algorithm = Application.RS256_ALGORITHM
    app.skip_authorization = True
    app.save()
    return HttpResponse(status=204)


@csrf_exempt
def mode(request):
    if request.method != "POST" or not _authorised(request):
        return HttpResponseForbidden()
    wanted = json.loads(request.body)["mode"]
    if wanted not in MODES:
        return HttpResponse(status=400)
    _state["mode"] = wanted
    return HttpResponse(status=204)
