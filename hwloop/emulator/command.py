"""``hwloop emulate`` and ``python -m hwloop.emulator``: the virtual bench's own command line.

It lives here, beside the emulator, so that ``python -m hwloop.emulator`` (what ``VirtualBench(mode="process")``
starts) does not import the CLI layer; ``hwloop.cli`` registers the same command as ``hwloop emulate``. Every
option is the emulator's own; ``--cdf`` reads a table as the CLI's ``--cdf`` does (default: the built-in table).
"""

from __future__ import annotations

import click

from hwloop.clicktypes import FiniteFloat
from hwloop.emulator.bench import EMULATED_SMUS


@click.command("emulate")
@click.option(
    "--bench",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="Bench file to emulate (e.g. instruments/virtual.toml): tiles, baud rate, tables, limits.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the emulated chip.")
@click.option("--no-pace", is_flag=True, help="Do not pace the pty at the baud rate (as fast as possible).")
@click.option(
    "--drop-rate",
    type=FiniteFloat(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that a request frame is lost before the board.",
)
@click.option(
    "--drop-answer-rate",
    type=FiniteFloat(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that an answer frame is lost after the board executed the request.",
)
@click.option(
    "--garble-rate",
    type=FiniteFloat(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that an answer frame arrives with a flipped bit (bad CRC).",
)
@click.option(
    "--garble-request-rate",
    type=FiniteFloat(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that a request frame arrives corrupted (the board NAKs it).",
)
@click.option(
    "--delay-ms",
    type=FiniteFloat(min=0),
    default=0.0,
    show_default=True,
    help="Extra latency before every board answer.",
)
@click.option(
    "--smu-error-rate",
    type=FiniteFloat(0, 1),
    default=0.0,
    show_default=True,
    help="Probability that an SMU command leaves an error in its error queue.",
)
@click.option(
    "--disconnect-after",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Close the FPGA link after this many frames (0: never).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory for the generated bench file (default: a new temporary directory).",
)
@click.option(
    "--ideal",
    is_flag=True,
    help="Emulate an ideal chip: no read noise, perfect forming, no wear-out (CDF spread stays).",
)
@click.option(
    "--smu",
    type=click.Choice(list(EMULATED_SMUS)),
    default=None,
    help="SMU to emulate (default: the bench file's [smu] driver). b1500 uses the file's [b1500] "
    "slots, or WL slot 1 (B1511B) and BL slot 2 (B1517A) if it has none.",
)
@click.option(
    "--cdf",
    "cdf",
    type=click.Path(dir_okay=False),
    default=None,
    help="Conductance CDF table for the simulated chip: your own table (.h5/.csv) or a calibration "
    "file. Default: the built-in synthetic HfOx table.",
)
def emulate(
    bench: str,
    seed: int,
    no_pace: bool,
    drop_rate: float,
    drop_answer_rate: float,
    garble_rate: float,
    garble_request_rate: float,
    delay_ms: float,
    smu_error_rate: float,
    disconnect_after: int,
    workdir: str | None,
    ideal: bool,
    smu: str | None,
    cdf: str | None,
) -> None:
    """Start the virtual bench: an emulated FPGA board on a pty and an emulated SMU (Keithley 2636B, TSP, or
    Keysight B1500A, FLEX) on a loopback TCP socket, all backed by a simulated chip. Prints ONE JSON line;
    its `bench` field is a bench file that points at the emulated instruments (use it with
    `--chip real --bench FILE`). Runs until Ctrl-C or SIGTERM.
    """
    from hwloop.chip.cdf import load_table
    from hwloop.chip.default_table import default_table
    from hwloop.chip.sim import SimConfig
    from hwloop.emulator.faults import Faults
    from hwloop.emulator.run import run_forever

    faults = Faults(
        drop_rate=drop_rate,
        drop_answer_rate=drop_answer_rate,
        garble_rate=garble_rate,
        garble_request_rate=garble_request_rate,
        delay_s=delay_ms / 1e3,
        smu_error_rate=smu_error_rate,
        disconnect_after=disconnect_after,
        seed=seed,
    )
    run_forever(
        bench,
        seed=seed,
        faults=faults,
        pace=not no_pace,
        workdir=workdir,
        sim_config=SimConfig.ideal() if ideal else None,
        table=load_table(cdf) if cdf else default_table(),
        smu=smu,
    )
