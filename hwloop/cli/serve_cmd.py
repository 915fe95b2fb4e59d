"""``hwloop serve``: a read-only live dashboard over run logs, in the browser (docs/serve.md)."""

from __future__ import annotations

import click

from hwloop.cli import cli


@cli.command("serve")
@click.argument("runs_dir", nargs=-1, type=click.Path(file_okay=False))
@click.option("--port", type=int, default=8750, show_default=True, help="TCP port (0: any free port).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but the loopback requires a token (--token, or one is generated).",
)
@click.option("--token", default=None, help="Secret every request must carry (at least 16 characters).")
@click.option(
    "--stall-s",
    type=float,
    default=120.0,
    show_default=True,
    help="Flag a running run as stalled when its last flush is older than this.",
)
def serve_cmd(runs_dir: tuple[str, ...], port: int, host: str, token: str | None, stall_s: float) -> None:
    """Watch runs live and browse finished ones, without touching them.

    Serves a page listing the run logs and sweeps under RUNS_DIR (default: runs), with per-run plots
    (accuracy, programs, loss, conductance and wear maps, level histograms), live updates while a run
    is written, and comparisons of runs or sweep groups. Logs are only ever opened read-only (SWMR).
    """
    from hwloop.serve import check_extra

    check_extra()
    from hwloop.serve.server import serve

    def announce(url: str) -> None:
        click.echo(f"hwloop serve: {url}  (read-only; Ctrl-C stops)", err=False)

    serve(list(runs_dir) or ["runs"], host=host, port=port, token=token, stall_s=stall_s, announce=announce)
