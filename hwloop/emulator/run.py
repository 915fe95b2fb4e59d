"""Run the virtual bench in the foreground until Ctrl-C or SIGTERM, printing one JSON line."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from hwloop.chip.cdf import CdfTable
from hwloop.chip.sim import SimConfig
from hwloop.emulator.bench import VirtualBench
from hwloop.emulator.faults import Faults
from hwloop.signals import handling


def run_forever(
    bench: str | Path,
    *,
    seed: int = 0,
    faults: Faults | None = None,
    pace: bool = True,
    workdir: str | None = None,
    sim_config: SimConfig | None = None,
    table: CdfTable | None = None,
    smu: str | None = None,
) -> None:
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    with (
        handling(_on_signal, signal.SIGTERM, signal.SIGINT),
        VirtualBench(
            bench, seed=seed, faults=faults, pace=pace, workdir=workdir, sim_config=sim_config, table=table, smu=smu
        ) as vb,
    ):
        sys.stdout.write(json.dumps(vb.info) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
