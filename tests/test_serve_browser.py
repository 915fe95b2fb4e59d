"""hwloop serve in a real browser: headless Chromium (Debian's chromium + chromium-driver) via selenium.

The page is served by a real ``hwloop serve`` process over a folder holding a finished run and a run that a
background ``hwloop train`` is still writing. CI installs chromium in ``.ci/run``; without it this skips.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("starlette", reason="hwloop serve needs the serve extra: pip install -e '.[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing (pip install -e '.[test]')")
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; "
        ".ci/run installs them)",
        allow_module_level=True,
    )

from _tiny import tiny_config  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from hwloop.runlog import RunLog  # noqa: E402

CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def wait_for(cond: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.2) -> object:
    end = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < end:
        try:
            last = cond()
        except Exception as exc:  # the page may be between renders
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def _finished_run(folder: Path, data: Path) -> Path:
    from hwloop.orchestrator import train

    out = folder / "done.h5"
    train(tiny_config(data, out, train_samples=200, threads=1))
    return out


@pytest.fixture
def bench_folder(tiny_data: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, Path, subprocess.Popen]]:
    folder = tmp_path / "runs"
    folder.mkdir()
    done = _finished_run(folder, tiny_data)
    live = folder / "live.h5"
    train = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hwloop",
            "train",
            "--chip",
            "sim",
            "--tasks",
            "mnist",
            "--epochs-per-task",
            "200",
            "--warmup",
            "0",
            "--hidden",
            "16",
            "--batch-size",
            "2",
            "--data-dir",
            str(tiny_data),
            "--no-verify-data",
            "--threads",
            "1",
            "--out",
            str(live),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        yield folder, done, live, train
    finally:
        if train.poll() is None:
            train.send_signal(signal.SIGTERM)
            try:
                train.wait(30)
            except subprocess.TimeoutExpired:
                train.kill()
                train.wait(10)


@pytest.fixture
def server(bench_folder: tuple[Path, Path, Path, subprocess.Popen]) -> Iterator[str]:
    folder = bench_folder[0]
    p = subprocess.Popen(
        [sys.executable, "-m", "hwloop", "serve", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        line = p.stdout.readline() if p.stdout else ""
        assert line.startswith("hwloop serve: http://127.0.0.1:"), (line, p.stderr.read() if p.poll() else "")
        yield line.split()[2]
    finally:
        p.terminate()
        p.wait(15)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chrome-profile'}")
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(tmp_path / "chrome-profile", ignore_errors=True)


def _epochs_in_log(path: Path) -> int:
    with RunLog(path) as log:
        log.refresh()
        return int(log.epochs().shape[0])


def _plot_points(drv: object, div: str) -> int:
    """Points (x values; rows of a heatmap) Plotly holds in the plot's traces (not our own bookkeeping)."""
    return int(
        drv.execute_script(  # type: ignore[attr-defined]
            f"const g = document.getElementById('{div}'); return g && g.data ? "
            "g.data.reduce((n, t) => n + (t.x ? t.x.length : t.z ? t.z.length : 0), 0) : -1;"
        )
    )


def test_dashboard_in_headless_chromium(bench_folder: tuple, server: str, browser: object) -> None:
    t0 = time.monotonic()
    _folder, done, live, train = bench_folder
    drv = browser
    wait_for(lambda: live.exists() and _epochs_in_log(live) >= 1, 40, "the live run's first epoch")
    drv.get(server)  # type: ignore[attr-defined]

    def rows() -> dict[str, str]:
        return {
            tr.get_attribute("data-id"): tr.get_attribute("data-status")
            for tr in drv.find_elements(By.CSS_SELECTOR, "#runs tr.run")
        }  # type: ignore[attr-defined]

    got = wait_for(lambda: rows() if len(rows()) == 2 else None, 20, "both runs in the run list")
    assert got == {"0:done.h5": "finished", "0:live.h5": "running"}, got

    # the finished run: one plotted point per (epoch, task evaluated) in its log
    with RunLog(done) as log:
        expected = int(np.isfinite(log.epochs()["acc"]).sum())
    assert expected == 6  # mnist in its 4 epochs, fashion-mnist in its 2
    wait_for(
        lambda: drv.find_element(By.CSS_SELECTOR, "tr[data-id='0:done.h5']").click() is None,
        10,  # type: ignore[attr-defined]
        "a click on the finished run",
    )
    wait_for(lambda: _plot_points(drv, "plot-acc") == expected, 20, f"{expected} points in the accuracy plot")
    wait_for(lambda: _plot_points(drv, "plot-gmap") > 0, 20, "the conductance map")

    # the live run: a new epoch appears without a reload
    drv.execute_script("window.__noReload = 42;")  # type: ignore[attr-defined]
    wait_for(
        lambda: drv.find_element(By.CSS_SELECTOR, "tr[data-id='0:live.h5']").click() is None,
        10,  # type: ignore[attr-defined]
        "a click on the live run",
    )
    first = int(
        wait_for(
            lambda: _plot_points(drv, "plot-acc") > 0 and _plot_points(drv, "plot-acc"),
            20,
            "the live run's accuracy plot",
        )
    )
    assert train.poll() is None, "the background training ended before the page could watch it"
    later = int(
        wait_for(
            lambda: _plot_points(drv, "plot-acc") > first and _plot_points(drv, "plot-acc"),
            20,
            "a new epoch of the live run on the page",
        )
    )
    assert later > first
    assert drv.execute_script("return window.__noReload;") == 42  # type: ignore[attr-defined]
    assert later <= _epochs_in_log(live)  # nothing on the page that the log does not hold
    status = drv.find_element(By.CSS_SELECTOR, "#run-stats span[data-key='status']").text  # type: ignore[attr-defined]
    assert "running" in status

    # compare the two runs: each run's curves plus mean, and the ± std band, per task
    def tick(rid: str) -> bool:  # the list is redrawn every poll: retry on a stale element
        box = drv.find_element(By.CSS_SELECTOR, f"#runs input[value='{rid}']")  # type: ignore[attr-defined]
        if not box.is_selected():
            box.click()
        return drv.find_element(By.CSS_SELECTOR, f"#runs input[value='{rid}']").is_selected()  # type: ignore[attr-defined]

    for rid in ("0:done.h5", "0:live.h5"):
        wait_for(lambda rid=rid: tick(rid), 10, f"ticking {rid}")
    drv.find_element(By.ID, "compare-selected").click()  # type: ignore[attr-defined]
    n_traces = "const g = document.getElementById('plot-compare'); return g && g.data ? g.data.length : 0;"
    # per task: 2 runs + upper + lower band + mean = 5 traces; the two runs have 2 tasks between them
    wait_for(lambda: drv.execute_script(n_traces) == 10, 20, "the comparison plot")  # type: ignore[attr-defined]

    # the served JSON says the same as the page, and the page never asked for anything but GETs
    with urllib.request.urlopen(server + "api/runs", timeout=10) as r:
        runs = {x["id"]: x for x in json.load(r)["runs"]}
    assert runs["0:live.h5"]["since_flush_s"] is not None and math.isfinite(runs["0:live.h5"]["since_flush_s"])
    if os.environ.get("HWLOOP_SCREENSHOT"):
        drv.save_screenshot(os.environ["HWLOOP_SCREENSHOT"])  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 60
