"""``python -m bench.seed_history N [--pending P] [--audit] ...``: N historic actions for the benchmarks.

The command line of bench/seeding.py (``--help`` lists its options): the settings are ``DJANGO_SETTINGS_MODULE``'s,
``config.settings.local`` (as manage.py) when unset; the database is the one they name. PostgreSQL only (COPY).
Bad input is one line, "CommandError: ...", and exit status 1, as a management command's.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import django

    django.setup()
    from bench.seeding import Command  # models can be imported once Django is set up

    # As manage.py runs a command: (program, command, arguments...); the usage line reads the first two.
    Command().run_from_argv(["python -m", "bench.seed_history", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
