"""``RunLog.accuracy`` and ``RunLog.results``: the one reader of a run's accuracies (trainer, sweep, reports,
dashboard), on a log written by the real writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwloop.analysis.runs import load_run
from hwloop.chip.default_table import default_table
from hwloop.runlog import RunLog, RunLogWriter


def _log(p: Path, acc_rows: list[list[float]], epochs_per_task: int = 2) -> Path:
    w = RunLogWriter.create(
        p,
        config={"epochs_per_task": epochs_per_task},
        table=default_table(),
        tasks=["mnist", "fashion-mnist"],
        n_tiles=1,
        tile_backends=["sim"],
        chip="sim",
        seed=0,
    )
    for i, acc in enumerate(acc_rows):
        w.append_epoch(
            {"epoch": i + 1, "task": i // epochs_per_task, "acc": np.asarray(acc, np.float32), "step": 10 * (i + 1)}
        )
    w.close(compact=False)
    return p


def test_accuracy_and_results_of_a_trainer_log(tmp_path: Path) -> None:
    nan = float("nan")
    rows = [[0.5, nan], [0.9, nan], [0.8, 0.6], [0.7, 0.75]]
    with RunLog(_log(tmp_path / "r.h5", rows)) as log:
        frac = log.accuracy()
        pct = log.accuracy(percent=True)
        res = log.results()
    want = np.asarray(rows, np.float32).astype(np.float64)
    np.testing.assert_array_equal(frac, want)
    np.testing.assert_array_equal(pct, want * 100.0)
    assert res["final_acc"] == {"mnist": float(np.float32(0.7)), "fashion-mnist": float(np.float32(0.75))}
    assert res["acc_after_task"] == {
        "mnist": {"mnist": float(np.float32(0.9))},
        "fashion-mnist": {"mnist": float(np.float32(0.7)), "fashion-mnist": float(np.float32(0.75))},
    }
    assert res["epochs"] == 4 and res["steps"] == 40
    info = load_run(tmp_path / "r.h5")  # the reports read the same figures
    np.testing.assert_array_equal(info.acc_pct, pct)
    assert info.final_acc()[1] == pytest.approx(75.0)


def test_a_log_in_percent_is_detected(tmp_path: Path) -> None:
    with RunLog(_log(tmp_path / "p.h5", [[50.0, float("nan")], [97.5, float("nan")]])) as log:
        np.testing.assert_allclose(log.accuracy(percent=True)[:, 0], [50.0, 97.5])
        np.testing.assert_allclose(log.accuracy()[:, 0], [0.5, 0.975])
        assert log.results()["final_acc"] == {"mnist": pytest.approx(0.975)}


def test_an_empty_log_has_no_results(tmp_path: Path) -> None:
    with RunLog(_log(tmp_path / "e.h5", [])) as log:
        assert log.accuracy().shape == (0, 2)
        assert log.results()["final_acc"] == {} and log.results()["epochs"] == 0
