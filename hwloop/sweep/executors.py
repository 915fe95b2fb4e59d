"""Where the points of a sweep run: local worker processes or Ray tasks (LocalExecutor, RayExecutor)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hwloop.errors import ConfigError
from hwloop.signals import interrupt_now
from hwloop.sweep.point import run_point

#: ``--ray-logs``: workers write the logs into the shared sweep folder, or return their bytes to the driver
RAY_LOG_MODES = ("shared", "return")

Job = tuple[str, dict, str, bytes | None]  # (point name, config, log path, log bytes to seed or None)
Outcome = tuple[str, dict]  # (point name, result of run_point)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _worker_main(conn: Any, parent_pid: int) -> None:
    """Loop of a local worker process: receive (name, config, log) jobs, send back results."""

    signal.signal(signal.SIGTERM, interrupt_now)

    def watch_parent() -> None:  # the driver was killed (SIGKILL): stop too, leaving a resumable log
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(20)
                os._exit(3)

    threading.Thread(target=watch_parent, daemon=True).start()
    try:
        while True:
            job = conn.recv()
            if job is None:  # done: skip the interpreter's slow tear-down of torch (every log is closed)
                conn.close()
                os._exit(0)
            name, config, log, _ = job
            conn.send((name, run_point(config, log)))
    except (KeyboardInterrupt, EOFError, OSError):
        return


class LocalExecutor:
    """A fixed set of worker processes (spawned, so torch starts clean); each runs one point at a time.

    A worker that dies (segfault, OOM kill) fails only the point it was running and is replaced.
    """

    kind = "local"

    def __init__(self, workers: int) -> None:
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.n = max(1, workers)
        self.procs: list[Any] = []

    def settings(self) -> dict:
        return {"kind": self.kind, "workers": self.n}

    def _spawn(self) -> tuple[Any, Any]:
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True, name="hwloop-sweep-worker")
        p.start()
        child.close()
        self.procs.append(p)
        return p, parent

    def run(self, jobs: list[Job], on_start: Callable[[str], None]) -> Iterator[Outcome]:
        from multiprocessing.connection import wait

        pending = list(jobs)
        idle: list[tuple[Any, Any]] = [self._spawn() for _ in range(min(self.n, len(jobs)))]
        busy: dict[Any, tuple[Any, str]] = {}  # conn -> (process, point name)
        try:
            while pending or busy:
                while pending and idle:
                    proc, conn = idle.pop()
                    name, cfg, log, _ = pending.pop(0)
                    conn.send((name, cfg, log, None))
                    busy[conn] = (proc, name)
                    on_start(name)
                ready = wait(list(busy) + [p.sentinel for p, _ in busy.values()], timeout=1.0)
                for conn in list(busy):
                    proc, name = busy[conn]
                    if conn in ready:
                        try:
                            got_name, res = conn.recv()
                        except (EOFError, OSError):
                            proc.join(timeout=5)  # the worker is gone
                        else:
                            del busy[conn]
                            if pending:
                                idle.append((proc, conn))
                            else:  # nothing left for it: let it exit while the others finish
                                with contextlib.suppress(OSError):
                                    conn.send(None)
                                conn.close()
                            yield got_name, res
                            continue
                    if conn in ready or not proc.is_alive():
                        proc.join(timeout=5)
                        del busy[conn]
                        conn.close()
                        yield name, {"status": "failed", "error": f"worker process died (exit code {proc.exitcode})"}
                        if pending:
                            idle.append(self._spawn())
        finally:
            self.close(idle, busy)

    def close(self, idle: list, busy: dict) -> None:
        for _, conn in idle:
            with contextlib.suppress(OSError):
                conn.send(None)
        running = [b[0] for b in busy.values()]
        for p in running:
            if p.is_alive():
                p.terminate()  # SIGTERM: the run closes its log as interrupted
        for conn in [c for _, c in idle] + list(busy):
            conn.close()
        deadline = time.monotonic() + 30
        for p in self.procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        self.procs.clear()


class RayExecutor:
    """One Ray task per point (``num_cpus=cpus_per_run``).

    ``address``: ``"local"`` starts a Ray instance on this machine (``num_cpus`` = ``local_cpus`` or all);
    ``"auto"`` joins the running cluster (``ray start``; or RAY_ADDRESS); anything else is a cluster address
    (``ray://host:10001`` or ``host:6379``). If Ray is already initialised in this process it is used as it is.
    ``logs``: ``"shared"`` (workers write the run logs in the sweep folder, which must be on a file system
    they share) or ``"return"`` (workers write to a local temporary folder and return the log's bytes).
    """

    kind = "ray"

    def __init__(
        self,
        address: str,
        cpus_per_run: int = 1,
        logs: str = "shared",
        local_cpus: int | None = None,
        max_retries: int = 1,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--ray needs Ray: pip install 'hwloop[ray]' (or pip install ray)") from exc
        if logs not in RAY_LOG_MODES:
            raise ConfigError(f"--ray-logs {logs!r}: choose {' or '.join(RAY_LOG_MODES)}")
        self.ray = ray
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.logs = logs
        self.max_retries = max_retries
        self.started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address == "local":
                ray.init(num_cpus=local_cpus, **kw)
            else:
                ray.init(address=address, **kw)
            self.started = True

    def settings(self) -> dict:
        return {"kind": self.kind, "address": self.address, "cpus_per_run": self.cpus_per_run, "logs": self.logs}

    def run(self, jobs: list[Job], on_start: Callable[[str], None]) -> Iterator[Outcome]:
        ray = self.ray
        task = ray.remote(run_point).options(num_cpus=self.cpus_per_run, max_retries=self.max_retries)
        refs: dict[Any, str] = {}
        try:
            for name, cfg, log, seed_bytes in jobs:
                ref = task.remote(cfg, log, return_bytes=self.logs == "return", log_bytes=seed_bytes)
                refs[ref] = name
                on_start(name)
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in done:
                    name = refs.pop(ref)
                    try:
                        res = ray.get(ref)
                    except Exception as exc:  # the task's worker died, or Ray failed it
                        res = {"status": "failed", "error": f"ray task failed: {type(exc).__name__}: {exc}"[:2000]}
                    yield name, res
        finally:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False
