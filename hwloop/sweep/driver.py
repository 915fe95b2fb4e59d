"""The sweep driver: :func:`run_sweep` plans a folder, runs its points on an executor, keeps ``sweep.json`` current."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwloop.errors import ConfigError
from hwloop.progress import progress_bar
from hwloop.signals import handling, interrupt_now
from hwloop.sweep.executors import LocalExecutor, RayExecutor, cpu_cores
from hwloop.sweep.manifest import LOCK_NAME, Manifest, PointRecord
from hwloop.sweep.plan import plan
from hwloop.sweep.point import log_state, results_from_log
from hwloop.sweep.summary import write_summary


@dataclass
class SweepResult:
    manifest: Manifest
    ran: list[str]  # points executed by this invocation
    skipped: list[str]  # points found finished
    failed: list[str]
    wall_s: float
    summary_csv: Path | None = None
    summary_md: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


@contextlib.contextmanager
def _folder_lock(d: Path) -> Iterator[None]:
    d.mkdir(parents=True, exist_ok=True)
    path = d / LOCK_NAME
    f = open(path, "a+")  # noqa: SIM115 - held for the whole sweep
    try:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError as exc:
            f.seek(0)
            who = f.read().strip() or "another process"
            raise ConfigError(f"another hwloop sweep is running on {d} ({who}); wait for it or stop it") from exc
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        f.close()


def _apply(rec: PointRecord, res: dict) -> None:
    # wall_s comes from the log: the training time of its epochs, whichever attempt ran them
    for k in (
        "final_acc",
        "acc_after_task",
        "epochs",
        "steps",
        "programs",
        "wall_s",
        "run_wall_s",
        "host",
        "started_utc",
        "ended_utc",
        "action",
    ):
        if res.get(k) is not None:
            setattr(rec, k, res[k])
    rec.status = res.get("status", "failed")
    rec.error = res.get("error") if rec.status != "finished" else None


def run_sweep(
    sweep_dir: str | Path,
    grid: dict[str, Sequence] | None = None,
    base: dict[str, Any] | None = None,
    *,
    explicit: set[str] | None = None,
    workers: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    ray_logs: str = "shared",
    cpus_per_run: int | None = None,
    progress: bool = True,
    retry_failed: bool = True,
) -> SweepResult:
    """Run (or continue) a sweep in ``sweep_dir``; see :func:`plan` for how an existing folder is merged.

    Local executor (default): ``workers`` processes, each run with ``threads`` torch threads (default
    ``max(1, cores // workers)``). Ray (``ray_address`` "local", "auto" or an address): one task per point with
    ``num_cpus = cpus_per_run`` (default 1) and as many torch threads. Finished points are skipped; the others
    run (resumed from their checkpoints). ``retry_failed=False`` leaves points marked failed alone.
    A failed point never stops the sweep; the result lists the failed points.
    """
    d = Path(sweep_dir)
    t0 = time.monotonic()
    with _folder_lock(d), handling(interrupt_now):
        man = plan(d, grid, base, explicit)
        if man.base.get("chip") == "real" and (ray_address or workers > 1):
            raise ConfigError("--chip real drives one bench: run its sweep with --workers 1 and without --ray")
        if ray_address:
            cpr = cpus_per_run or threads or 1
            executor: LocalExecutor | RayExecutor = RayExecutor(
                ray_address, cpus_per_run=cpr, logs=ray_logs, local_cpus=None if workers <= 1 else workers
            )
            n_threads = cpr
        else:
            executor = LocalExecutor(workers)
            n_threads = threads or max(1, cpu_cores() // max(1, workers))
        man.executor = {
            **executor.settings(),
            "threads": n_threads,
            "driver_host": socket.gethostname(),
            "driver_pid": os.getpid(),
        }
        skipped, jobs = [], []
        for rec in man.points:
            log = man.log_path(rec)
            state, _ = log_state(log) if log.exists() else ("missing", False)
            if state == "finished":
                if rec.status != "finished" or not rec.final_acc:
                    _apply(rec, {**results_from_log(log), "status": "finished", "action": "found"})
                skipped.append(rec.name)
                continue
            if rec.status == "failed" and not retry_failed:
                continue
            cfg = {**rec.config, "progress": False, "threads": n_threads}
            seed_bytes = None
            if isinstance(executor, RayExecutor) and executor.logs == "return" and log.exists():
                seed_bytes = log.read_bytes()
            jobs.append((rec.name, cfg, str(log), seed_bytes))
        man.save()
        ran: list[str] = []
        bar = _bar(len(man.points), len(skipped), progress)

        def on_start(name: str) -> None:
            rec = man.point(name)
            rec.status = "running" if isinstance(executor, LocalExecutor) else "queued"
            rec.error = None
            rec.attempts += 1
            man.save()

        outcomes = executor.run(jobs, on_start)
        try:
            for name, res in outcomes:
                rec = man.point(name)
                blob = res.pop("log_bytes", None)
                if blob is not None:
                    _write_atomic(man.log_path(rec), blob)
                if res.get("status") == "finished" and not man.log_path(rec).exists():
                    res = {
                        **res,
                        "status": "failed",
                        "error": f"the run finished on {res.get('host')} but its log is not in {man.dir} here; "
                        "put the sweep folder on a shared file system or use --ray-logs return",
                    }
                _apply(rec, res)
                ran.append(name)
                man.save()
                bar.update(1)
                counts = man.counts()
                bar.set_postfix_str(" ".join(f"{k} {v}" for k, v in counts.items() if k != "pending"), refresh=True)
                if rec.status == "failed":
                    bar.write(f"point {name} failed: {rec.error}", file=sys.stderr)  # stdout: --json
        except KeyboardInterrupt:
            for rec in man.points:
                if rec.status in ("running", "queued"):
                    rec.status = "interrupted"
            man.save()
            raise
        finally:
            outcomes.close()
            bar.close()
            if isinstance(executor, RayExecutor):
                executor.shutdown()
        man.save()
        csv_path, md_path = write_summary(man)
    failed = [p.name for p in man.points if p.status == "failed"]
    return SweepResult(
        manifest=man,
        ran=ran,
        skipped=skipped,
        failed=failed,
        wall_s=time.monotonic() - t0,
        summary_csv=csv_path,
        summary_md=md_path,
    )


def _write_atomic(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def _bar(total: int, initial: int, enabled: bool) -> Any:
    return progress_bar(
        enabled, total=total, initial=initial, unit="point", desc="sweep", file=sys.stderr, dynamic_ncols=True
    )
