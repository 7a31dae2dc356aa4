"""Operating Countersign: dependency checks behind the probes (``health``), Prometheus metrics (``metrics``) and what
the Celery broker holds (``broker_queue``). Reads only; imports models and the foundations.
"""
