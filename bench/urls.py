"""Production URLs plus ``POST /bench/floor``; mounted only by bench.settings with COUNTERSIGN_BENCH_ENDPOINTS=1."""

from django.urls import path

from bench.views import FloorView
from config.urls import handler404, handler500
from config.urls import urlpatterns as production_urlpatterns

urlpatterns = [path("bench/floor", FloorView.as_view(), name="bench-floor"), *production_urlpatterns]

__all__ = ["handler404", "handler500", "urlpatterns"]
