"""hwloop command line: thin click commands over the library.

Every ``HwloopError`` becomes one line on stderr and exit code 2; Ctrl-C and SIGTERM exit 130 after the
commands have put instruments in their safe state and flushed their logs (both through ``request_stop``).
"""

from __future__ import annotations

import signal
import sys

import click

from hwloop import __version__
from hwloop.errors import HwloopError
from hwloop.signals import Terminated, flag_only, request_stop, stop_requested


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hwloop")
def cli() -> None:
    """Hardware-in-the-loop training of metaplastic quantized networks on memristor crossbars.

    Typical session: `hwloop chip info --chip sim`, `hwloop calibrate --chip sim`,
    `hwloop train --chip sim`, then `hwloop endurance runs/<name>.h5` and `hwloop report`.
    """


def _register() -> None:
    # Each command lives in its own module; importing it attaches it to ``cli``.
    from hwloop.cli import (
        analysis_cmd,  # noqa: F401
        bench_cmd,  # noqa: F401
        calibrate_cmd,  # noqa: F401
        chip_cmd,  # noqa: F401
        continual_cmd,  # noqa: F401
        cycle_cmd,  # noqa: F401
        estimate_cmd,  # noqa: F401
        reproduce_cmd,  # noqa: F401
        retention_cmd,  # noqa: F401
        serve_cmd,  # noqa: F401
        sweep_cmd,  # noqa: F401
        train_cmd,  # noqa: F401
        verify_cmd,  # noqa: F401
    )


_register()


def main(argv: list[str] | None = None) -> None:
    # SIGTERM (kill, a scheduler stopping the job) and Ctrl-C (SIGINT) take one path: instruments to their
    # safe state, run logs flushed and marked interrupted. Both go through request_stop, so a stop during
    # training is a flag that the loop takes between steps: Python's own SIGINT handler raises wherever the
    # main thread is, and a KeyboardInterrupt raised inside a weakref callback is printed and dropped (the
    # run then went on and finished, exit 0: tests/test_orchestrator.py's Ctrl-C test, about 1 run in 8).
    # Commands with their own handler (sweep, emulate) replace these while they run.
    sigint = signal.getsignal(signal.SIGINT)
    try:  # installed inside the try: a stop from here on is the KeyboardInterrupt below
        if signal.signal(signal.SIGTERM, request_stop) is flag_only and stop_requested.is_set():
            raise Terminated("SIGTERM while the CLI was imported")  # (``hwloop.__main__``): nothing started
        if sigint is signal.default_int_handler:  # not where the caller ignores Ctrl-C or has its own
            signal.signal(signal.SIGINT, request_stop)
        rv = cli.main(args=argv, prog_name="hwloop", standalone_mode=False)
    except HwloopError as exc:
        click.echo(f"hwloop: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("hwloop: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("hwloop: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "hwloop"
        click.echo(f"hwloop: error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except click.ClickException as exc:  # a command's own failure report (e.g. failed sweep points)
        click.echo(f"hwloop: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    finally:  # an in-process caller (a test, a notebook) gets its own Ctrl-C handling back
        if signal.getsignal(signal.SIGINT) is request_stop:
            signal.signal(signal.SIGINT, sigint)
    sys.exit(rv if isinstance(rv, int) else 0)
