"""Single sign-on: reviewers sign in through the company's OpenID Connect provider (issue 24; docs/sso.md).

A front door, beside ``web``: mozilla-django-oidc runs the authorization-code flow (PKCE, state, nonce); this
package adds what Countersign needs around it.

- provider.py    the configuration: the issuer's discovery document (fetched when first needed, cached), the
                 group map (COUNTERSIGN_OIDC_GROUP_MAP), whether SSO and password log-in are on
- backends.py    OidcBackend (ID token checked for signature, issuer, audience, expiry; the user found by the
                 provider's subject) and LocalPasswordBackend (password log-in, off with
                 COUNTERSIGN_LOCAL_LOGIN=false except for the break-glass superusers)
- identities.py  a sign-in: the OidcIdentity by (issuer, subject), a new or linked reviewer, groups and staff synced
                 from the provider's groups; every sign-in, link, group change and refusal audited
- session.py     what the session remembers of the sign-in: when (the session's age) and the provider's auth_time
                 (step-up)
- middleware.py  SessionMaxAgeMiddleware: a session older than COUNTERSIGN_SESSION_MAX_AGE_SECONDS ends (audited),
                 so groups are synced again at the next sign-in
- views.py       the sign-in page, the provider redirect (prompt=login and max_age for step-up) and its callback

Imports the services (accounts) and the models; nothing below imports it.
"""
