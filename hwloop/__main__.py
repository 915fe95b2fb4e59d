"""``python -m hwloop`` and the ``hwloop`` console script (``hwloop.__main__:run``).

A SIGTERM that arrives while the CLI is still being imported (about a second: click, numpy, h5py, every
command) only flags a stop (``hwloop.signals.flag_only``); ``hwloop.cli.main`` then exits 130 before it
starts anything, as it does for a stop at any later moment."""

from __future__ import annotations

import signal

from hwloop.signals import flag_only


def run() -> None:
    signal.signal(signal.SIGTERM, flag_only)
    from hwloop.cli import main

    main()


if __name__ == "__main__":
    run()
