"""A fast beat for the reliability scenarios: ``python -m tests.support.reliability_ticker [INTERVAL]``.

Celery beat runs the outbox sweep, the interrupted-execution sweep and the lost-execution redispatch every 5 s
(config/settings/base.py); a test that crashes workers twenty times wants them faster. This process calls the
same three functions the beat tasks call, every INTERVAL seconds, on the database and Redis of its environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from django.db import close_old_connections

    from approvals import services
    from approvals.outbox import dispatcher as outbox

    log = logging.getLogger("reliability.ticker")
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print("ticker ready", flush=True)
    while True:
        try:
            settled = services.settle_interrupted_executions()
            redispatched = services.redispatch_lost_executions()
            delivered = outbox.sweep()
            if settled or redispatched or delivered:
                print(
                    f"ticker: settled {settled} interrupted, redispatched {redispatched} lost, "
                    f"delivered {delivered} outbox messages",
                    flush=True,
                )
        except Exception:
            log.exception("ticker round failed")
        finally:
            close_old_connections()
        time.sleep(interval)


if __name__ == "__main__":
    main()
