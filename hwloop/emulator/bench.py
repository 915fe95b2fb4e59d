"""The virtual bench: an emulated FPGA board (pty) and SMU (loopback TCP) backed by one SimChip.

``VirtualBench`` is a context manager for tests and end-to-end runs::

    with VirtualBench("instruments/virtual.toml") as vb:
        chip = RealChip.from_bench_file(vb.bench_path, table=table)   # or --chip real --bench vb.bench_path

``mode="thread"`` (default) runs both instruments in background threads of this process, so a test can
look at ``vb.sim`` (the physics) and ``vb.board.log`` (what reached the wire). ``mode="process"`` starts
``python -m hwloop.emulator`` and reads its JSON line; use it for throughput measurements, where the
emulator must not share the GIL with the driver.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from hwloop.chip.cdf import CdfTable
from hwloop.chip.sim import SimChip, SimConfig
from hwloop.emulator.b1500 import B1500Emulator
from hwloop.emulator.board import BoardEmulator
from hwloop.emulator.device import DevicePhysics, EmulatedChip
from hwloop.emulator.faults import Faults
from hwloop.emulator.smu import SmuEmulator
from hwloop.errors import ConfigError, InstrumentError
from hwloop.instruments.b1500_config import B1500Config
from hwloop.instruments.bench import BenchConfig, load_bench


class VirtualBench:
    def __init__(
        self,
        bench: str | Path | BenchConfig | None = None,
        *,
        seed: int = 0,
        sim_config: SimConfig | None = None,
        table: CdfTable | None = None,
        faults: Faults | None = None,
        pace: bool = True,
        physics: DevicePhysics | None = None,
        mode: str = "thread",
        workdir: str | Path | None = None,
        smu: str | None = None,
        b1500_modules: dict[int, str] | None = None,
    ) -> None:
        if isinstance(bench, BenchConfig):
            self.config = bench
        elif bench is None:
            self.config = BenchConfig(name="virtual")
        else:
            self.config = load_bench(bench)
        self.config = with_smu_driver(self.config, smu)
        self.b1500_modules = b1500_modules
        if b1500_modules is not None and mode != "thread":
            raise ValueError("b1500_modules needs mode='thread'")
        if mode not in ("thread", "process"):
            raise ValueError("mode must be 'thread' or 'process'")
        self.seed, self.sim_config, self.table, self.physics = seed, sim_config, table, physics
        self.faults = faults or Faults()
        self.pace, self.mode = pace, mode
        self._workdir_arg = workdir
        self._tmp: str | None = None
        self.sim: SimChip | None = None
        self.chip: EmulatedChip | None = None
        self.board: BoardEmulator | None = None
        self.smu: SmuEmulator | B1500Emulator | None = None
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self.bench_path = ""

    # ------------------------------------------------------------------ lifetime
    def start(self) -> VirtualBench:
        self._tmp = tempfile.mkdtemp(prefix="hwloop-vbench-", dir=self._workdir_arg)
        try:
            if self.mode == "thread":
                self._start_threads()
            else:
                self._start_process()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_threads(self) -> None:
        cfg = self.config
        self.sim = SimChip(n_tiles=cfg.tiles, table=self.table, config=self.sim_config, seed=self.seed)
        self.chip = EmulatedChip(self.sim, self.physics, seed=self.seed)
        self.board = BoardEmulator(
            self.chip, cfg.limits, baud=cfg.fpga.baud, pace=self.pace, faults=self.faults
        ).start()
        if cfg.smu.driver == "b1500":
            self.smu = B1500Emulator(
                self.chip, config=cfg.b1500, modules=self.b1500_modules, faults=self.faults
            ).start()
        else:
            self.smu = SmuEmulator(
                self.chip,
                faults=self.faults,
                model=self.config.smu_model(),
                max_pulse_s=self.config.limits.smu_max_width_s,
            ).start()
        virtual = replace(
            cfg,
            name=f"{cfg.name} (virtual bench)",
            fpga=replace(cfg.fpga, port=self.board.port),
            smu=replace(cfg.smu, resource=self.smu.resource, visa_library="@py"),
        )
        assert self._tmp is not None
        self.bench_path = str(Path(self._tmp) / "bench.toml")
        virtual.save(self.bench_path)
        self.info = {
            "event": "listening",
            "bench": self.bench_path,
            "fpga_port": self.board.port,
            "baud": cfg.fpga.baud,
            "paced": self.pace,
            "smu_resource": self.smu.resource,
            "smu_driver": cfg.smu.driver,
            "tiles": cfg.tiles,
            "seed": self.seed,
            "pid": os.getpid(),
        }

    def _start_process(self) -> None:
        assert self._tmp is not None
        src = Path(self._tmp) / "source-bench.toml"
        self.config.save(src)
        f = self.faults
        cmd = [
            sys.executable,
            "-m",
            "hwloop.emulator",
            "--bench",
            str(src),
            "--seed",
            str(self.seed),
            "--workdir",
            self._tmp,
            "--drop-rate",
            str(f.drop_rate),
            "--garble-rate",
            str(f.garble_rate),
            "--drop-answer-rate",
            str(f.drop_answer_rate),
            "--garble-request-rate",
            str(f.garble_request_rate),
            "--delay-ms",
            str(f.delay_s * 1e3),
            "--smu-error-rate",
            str(f.smu_error_rate),
            "--disconnect-after",
            str(f.disconnect_after),
        ]
        if not self.pace:
            cmd.append("--no-pace")
        if self.sim_config is not None:
            if self.sim_config != SimConfig.ideal():
                raise ValueError("mode='process' supports sim_config=None or SimConfig.ideal() only")
            cmd.append("--ideal")
        if self.table is not None:
            table_path = Path(self._tmp) / "table.h5"
            self.table.save_h5(table_path)
            cmd += ["--cdf", str(table_path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self._readline_with_timeout(self.proc, 30.0)
        if not line:
            raise InstrumentError("virtual bench process did not start (no JSON line on stdout)")
        self.info = json.loads(line)
        self.bench_path = self.info["bench"]

    @staticmethod
    def _readline_with_timeout(proc: subprocess.Popen[str], timeout_s: float) -> str:
        out: list[str] = []

        def _read() -> None:
            out.append(proc.stdout.readline() if proc.stdout else "")

        t = threading.Thread(target=_read, daemon=True)
        t.start()
        t.join(timeout_s)
        return out[0] if out else ""

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self.board is not None:
            self.board.stop()
            self.board = None
        if self.smu is not None:
            self.smu.stop()
            self.smu = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> VirtualBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: ``[b1500]`` used when a bench without one is emulated with ``smu="b1500"`` (``hwloop emulate --smu b1500``).
DEFAULT_B1500 = B1500Config(wl_slot=1, bl_slot=2, wl_module="B1511B", bl_module="B1517A")


#: the SMU drivers the virtual bench emulates (``hwloop emulate --smu``)
EMULATED_SMUS = ("keithley2600", "b1500")


def with_smu_driver(cfg: BenchConfig, smu: str | None) -> BenchConfig:
    """``cfg`` with ``[smu] driver = smu`` and that driver's default model (a B1500 gets ``DEFAULT_B1500``
    slots if the file names none)."""
    if smu is None or smu == cfg.smu.driver:
        return cfg
    if smu not in EMULATED_SMUS:
        raise ConfigError(f"--smu {smu!r}: the virtual bench emulates {' or '.join(map(repr, EMULATED_SMUS))}")
    b1500 = cfg.b1500 if cfg.b1500.bl_slot else DEFAULT_B1500
    return replace(cfg, smu=replace(cfg.smu, driver=smu, model=""), b1500=b1500).validate()
