"""Who may sign in, and how: through the provider (OidcBackend) or with a password (LocalPasswordBackend).

mozilla-django-oidc exchanges the code (with the PKCE verifier) and fetches the provider's keys; it checks the
signature and the nonce but neither the audience nor the issuer. ``OidcBackend._verify_jws`` checks them all
with PyJWT: the algorithm configured (never "none", never one the token picks), a key from the provider's JWKS,
``iss`` the configured issuer, ``aud`` holding our client id (and ``azp`` ours when there are several),
``exp`` and ``iat`` present and ``exp`` not past. The user is then found by the subject (identities.sign_in). Each
refusal is audited (``user.sso_refused``) and the sign-in fails; nothing is half-written.
"""

from __future__ import annotations

import logging

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from approvals.sso import identities, provider
from approvals.web.auth_audit import _origin
from audit.chain import Actor, record_refusal

log = logging.getLogger(__name__)
LEEWAY_SECONDS = 60


class OidcBackend(OIDCAuthenticationBackend):
    """Signs in the person the provider's ID token names, by its subject; audits every refusal."""

    def __init__(self, *args, **kwargs):
        # The base class reads the endpoints from settings here; ours come from discovery, when a sign-in needs
        # them: Django makes a backend for every log-in and session check, which must not wait on the provider.
        self.UserModel = get_user_model()
        self.issuer = ""

    def _configure(self) -> None:
        found = provider.discover()
        self.issuer = found.issuer
        self.OIDC_OP_TOKEN_ENDPOINT = found.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = found.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = found.jwks_uri
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request, **kwargs):
        # Only the callback calls authenticate with a nonce; a password form never reaches the provider.
        if request is None or "nonce" not in kwargs or not provider.enabled():
            return None
        if not request.GET.get("code") or not request.GET.get("state"):
            return None
        origin = _origin(request)
        try:
            self._configure()
            return super().authenticate(request, **kwargs)
        except identities.SignInRefused as exc:
            reason = exc.reason
        except provider.DiscoveryFailed as exc:
            reason = f"the provider's discovery document: {exc}"
        except requests.RequestException as exc:
            reason = f"the provider did not answer as expected: {type(exc).__name__}"
            log.warning("sso: provider request failed", exc_info=True)
        except SuspiciousOperation as exc:
            reason = f"the provider's answer was refused: {exc}"
        except IntegrityError:
            # Two first sign-ins of one subject at once: the other made the identity; this one tries again.
            reason = "another sign-in of the same person was linking the account; sign in again"
        identities.refuse(reason, origin=origin)
        return None

    def _verify_jws(self, payload, key):
        try:
            header = jwt.get_unverified_header(payload)
        except jwt.PyJWTError:
            raise identities.SignInRefused("the ID token is not a JWT") from None
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise identities.SignInRefused(
                f"the ID token is signed with {header.get('alg')!r}, not {self.OIDC_RP_SIGN_ALGO}"
            )
        try:
            claims = jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidSignatureError:
            raise identities.SignInRefused(
                "the ID token's signature does not verify with the provider's keys"
            ) from None
        except jwt.InvalidAudienceError:
            raise identities.SignInRefused("the ID token was issued for another client (aud)") from None
        except jwt.InvalidIssuerError:
            raise identities.SignInRefused("the ID token was issued by another issuer (iss)") from None
        except jwt.ExpiredSignatureError:
            raise identities.SignInRefused("the ID token has expired") from None
        except jwt.PyJWTError as exc:
            raise identities.SignInRefused(f"the ID token is refused: {exc}") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise identities.SignInRefused("the ID token has several audiences and was not issued to us (azp)")
        return claims

    def retrieve_matching_jwk(self, token):
        try:
            return super().retrieve_matching_jwk(token)
        except SuspiciousOperation:
            raise identities.SignInRefused("no key of the provider's matches the ID token (kid)") from None

    def verify_claims(self, claims):
        return bool(claims.get("sub"))

    def get_or_create_user(self, access_token, id_token, payload):
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload.get("sub"):
            # OpenID Connect Core 5.3.2: the UserInfo answer is about the ID token's subject, or it is not used.
            raise identities.SignInRefused("the provider's userinfo is about another subject than the ID token")
        # The signed ID token wins over userinfo where both say something.
        signed = identities.SignIn.from_claims(self.issuer, {**userinfo, **payload})
        user = identities.sign_in(signed, origin=_origin(self.request))
        user.countersign_sign_in = signed  # read by the callback view (the session's auth_time)
        return user


class LocalPasswordBackend(ModelBackend):
    """Password log-in; with COUNTERSIGN_LOCAL_LOGIN=false only for the break-glass superusers."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        if not provider.local_login_allowed(username):
            _refuse_local(request, username, "password log-in is off (COUNTERSIGN_LOCAL_LOGIN=false)")
            return None
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and not settings.COUNTERSIGN_LOCAL_LOGIN and not user.is_superuser:
            _refuse_local(request, username, "a break-glass account must be a superuser")
            return None
        return user


def _refuse_local(request, username: str, reason: str) -> None:
    origin = _origin(request)
    record_refusal(
        actor=Actor("anonymous", "anonymous", "web"),
        verb="user.login_refused",
        kind=f"{username[:150]}@{origin['remote_addr']}",
        reason=reason,
        object_type="user",
        object_id=username[:64],
        data={"username": username[:150], **origin},
    )
