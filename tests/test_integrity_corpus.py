"""Damaged run logs: every reader (endurance, runs ls, report, --resume, and the library readers) answers
in bounded time, with one line and exit code 2 on the CLI, never a traceback or a hang (issue 12, item 8).

The corpus is made here from a closed log and a crashed one (still marked open by a dead writer: the case
that sent HDF5's SWMR reader into its retry loop for many minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _child import repo_env
from _damaged import make_corpus

from hwloop.orchestrator import TrainConfig, train

#: no reader may take longer than this on any damaged file (the unbounded SWMR loop took minutes)
BOUND_S = 30.0

_PROBE = r"""
import json, shutil, sys, time
from pathlib import Path
from hwloop.errors import HwloopError
path = Path(sys.argv[1])
out = {}
def run(name, fn):
    t = time.monotonic()
    try:
        fn()
        out[name] = {"ok": True, "s": time.monotonic() - t}
    except HwloopError as exc:
        out[name] = {"ok": False, "error": str(exc), "s": time.monotonic() - t}
    except BaseException as exc:  # anything else is a failure of the test
        out[name] = {"ok": False, "raw": f"{type(exc).__name__}: {exc}", "s": time.monotonic() - t}
def runlog():
    from hwloop.runlog import RunLog
    with RunLog(path) as log:
        log.refresh(); log.status; log.epochs(); log.config; log.table()
        for _ in log.iter_ops():
            pass
def endurance():
    from hwloop.analysis.endurance import count_ops, endurance_summary, failure_window
    from hwloop.analysis.logfile import open_runlog
    with open_runlog(path) as log:
        endurance_summary(log, counts=count_ops(log, window_steps=failure_window(log)))
def load_run():
    from hwloop.analysis.runs import load_run
    load_run(path)
def is_run_log():
    from hwloop.analysis.runs import is_run_log, other_hwloop_file
    is_run_log(path); other_hwloop_file(path)
def reopen():
    from hwloop.runlog import RunLogWriter
    cp = path.with_name(path.stem + "-reopen.h5")
    shutil.copyfile(path, cp)
    w, _, _ = RunLogWriter.reopen(cp)
    w.close("interrupted")
for name, fn in [("runlog", runlog), ("endurance", endurance), ("load_run", load_run),
                 ("is_run_log", is_run_log), ("reopen", reopen)]:
    run(name, fn)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def corpus(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    clean = d / "clean.h5"
    train(
        TrainConfig(
            tasks="mnist",
            epochs_per_task=1,
            warmup=0,
            hidden=16,
            lr=5e-3,
            batch_size=50,
            train_samples=200,
            chip="sim",
            data_dir=str(tiny_data),
            verify_data=False,
            out=str(clean),
            progress=False,
            eval_batch=200,
            threads=1,
        )
    )
    # a crashed log: reopened for writing by a process that then dies without closing it
    crashed = d / "crashed.h5"
    crashed.write_bytes(clean.read_bytes())
    code = (
        "import os, sys; from hwloop.runlog import RunLogWriter; "
        "w, _, _ = RunLogWriter.reopen(sys.argv[1]); w.flush(); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(crashed)], check=True, env=repo_env(), timeout=120)
    return make_corpus(clean, crashed, d / "damaged")


def test_corpus_crashed_base_is_marked_open(corpus: dict[str, Path]) -> None:
    """The crashed base really is the hard case: a plain (non-SWMR) open refuses it as still open."""
    import h5py

    base = next(iter(corpus.values())).parent.parent / "crashed.h5"
    with pytest.raises(OSError):
        h5py.File(base, "r")


def test_every_library_reader_answers_each_damaged_log_in_bounded_time(corpus: dict[str, Path]) -> None:
    results: dict[str, dict] = {}
    for name, path in sorted(corpus.items()):
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)],
            capture_output=True,
            text=True,
            env=repo_env(),
            timeout=5 * BOUND_S,
        )
        dt = time.monotonic() - t0
        assert r.returncode == 0, f"{name}: probe died (rc {r.returncode}): {r.stderr[-1500:]}"
        res = results[name] = json.loads(r.stdout.strip().splitlines()[-1])
        for reader, v in res.items():
            assert "raw" not in v, f"{name} / {reader}: not a HwloopError: {v['raw']}"
            assert v["s"] < BOUND_S, f"{name} / {reader}: {v['s']:.1f} s"
            if not v["ok"]:
                assert "\n" not in v["error"].strip(), f"{name} / {reader}: more than one line"
        print(f"{name}: {dt:.1f} s, " + ", ".join(f"{k} {'ok' if v['ok'] else 'refused'}" for k, v in res.items()))
    assert sum(len(v) for v in results.values()) == 5 * len(corpus)
    # the damage classes that every reader opening the file must refuse (others may be readable in part)
    for name in (
        "closed-truncated",
        "crashed-truncated",
        "closed-zeroed-superblock",
        "crashed-metadata-100",
        "crashed-swapped-object-headers",
    ):
        assert not results[name]["runlog"]["ok"] and not results[name]["reopen"]["ok"], name
    for name in ("closed-chunk-ops", "crashed-chunk-ops"):  # a damaged /ops chunk: the full pass refuses
        assert not results[name]["runlog"]["ok"] and not results[name]["endurance"]["ok"], name


@pytest.mark.parametrize("reader", ["endurance", "runs-ls", "report", "resume"])
def test_cli_readers_give_one_line_on_the_worst_damaged_log(
    reader: str, corpus: dict[str, Path], tmp_path: Path
) -> None:
    """The file that hung the SWMR reader for minutes: crashed, object header checksum broken."""
    src = corpus["crashed-metadata-100"]
    one = tmp_path / "runs"
    one.mkdir()
    f = one / src.name
    f.write_bytes(src.read_bytes())
    args = {
        "endurance": ["endurance", str(f)],
        "runs-ls": ["runs", "ls", str(one)],
        "report": ["report", str(f), "-o", str(tmp_path / "rep")],
        "resume": ["train", "--resume", str(f)],
    }
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "hwloop.cli", *args[reader]],
        capture_output=True,
        text=True,
        env=repo_env(),
        timeout=5 * BOUND_S,
        cwd=tmp_path,
    )
    dt = time.monotonic() - t0
    assert dt < BOUND_S, f"{reader} took {dt:.1f} s"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    if reader == "runs-ls":  # a listing: the damaged file is one row saying it is unreadable
        assert r.returncode == 0 and "unreadable" in r.stdout.lower(), r.stdout + r.stderr
    else:
        assert r.returncode == 2, r.stdout + r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
