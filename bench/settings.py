"""Benchmark settings: the production settings, plus the floor endpoint when COUNTERSIGN_BENCH_ENDPOINTS=1.

Only the benchmarks (bench/common.py) select this module; nothing in production imports it, and without
COUNTERSIGN_BENCH_ENDPOINTS=1 it serves exactly the production URLs.
"""

from __future__ import annotations

from config.env import env_bool
from config.settings.production import *  # noqa: F403

COUNTERSIGN_BENCH_ENDPOINTS = env_bool("COUNTERSIGN_BENCH_ENDPOINTS", default=False)
if COUNTERSIGN_BENCH_ENDPOINTS:
    ROOT_URLCONF = "bench.urls"

# Pages, not static files, are measured: serve static/ from the checkout as development does, so that no
# collectstatic step is needed before a run (production's manifest storage refuses names that were not collected).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"}}  # noqa: F405
WHITENOISE_USE_FINDERS = True
