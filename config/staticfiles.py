"""Static files in production: hashed, pre-compressed names with a one-year cache (config/settings/production.py).

Development, the embedded demo and tests serve static/ through finders instead (config/settings/base.py).
"""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage

ONE_YEAR = 365 * 24 * 60 * 60


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's manifest storage, minus the rewriting of ``sourceMappingURL`` comments.

    Vendored bundles (static/vendor/swagger-ui) name source maps they do not ship; Django would refuse to collect
    them (a referenced file that does not exist). A missing map costs a browser's developer tools a 404, nothing
    else, so those comments are left as they are; ``url()`` and ``@import`` references are still hashed.
    """

    patterns = tuple(
        (glob, tuple(p for p in pats if "sourceMappingURL" not in (p[0] if isinstance(p, tuple) else p)))
        for glob, pats in CompressedManifestStaticFilesStorage.patterns
    )


def one_year_for_hashed_files(headers, path: str, url: str) -> None:
    """Hashed names never change content: WhiteNoise marks them immutable with a ten-year max-age; one year is the
    conventional ceiling caches honour, so say that. Unhashed names keep WhiteNoise's short max-age
    (WHITENOISE_MAX_AGE, 60 s) so that a deploy is picked up."""
    if "immutable" in headers.get("Cache-Control", ""):
        headers["Cache-Control"] = f"max-age={ONE_YEAR}, public, immutable"
