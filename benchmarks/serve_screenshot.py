"""Screenshot of the dashboard (docs/serve.md): `hwloop serve` on a folder, one run opened, headless Chromium.

    python benchmarks/serve_screenshot.py RUNS_DIR RUN_REL --out docs/serve-dashboard.png [--tile 0]

Prints one JSON line (the PNG path and size, and how long the page took to draw the run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,2050",
    "--hide-scrollbars",
)


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs_dir")
    ap.add_argument("run_rel", help="the run's path relative to RUNS_DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tile", type=int, default=0)
    a = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    srv = subprocess.Popen(
        [sys.executable, "-m", "hwloop", "serve", a.runs_dir, "--port", "0"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        url = (srv.stdout.readline() if srv.stdout else "").split()[2]
        with tempfile.TemporaryDirectory() as prof:
            opts = webdriver.ChromeOptions()
            opts.binary_location = "/usr/bin/chromium"
            for f in (*FLAGS, f"--user-data-dir={prof}"):
                opts.add_argument(f)
            drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
            try:
                t0 = time.monotonic()
                drv.get(f"{url}?run=0:{a.run_rel}")
                js = "const g = document.getElementById('plot-hist'); return !!(g && g.data && g.data.length);"
                while not drv.execute_script(js):
                    if time.monotonic() - t0 > 120:
                        raise SystemExit("the page did not draw the run within 120 s")
                    time.sleep(0.2)
                drawn_s = time.monotonic() - t0
                time.sleep(1.0)
                drv.save_screenshot(a.out)
            finally:
                drv.quit()
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(30)
    print(
        json.dumps(
            {"benchmark": "serve_screenshot", "png": a.out, "bytes": Path(a.out).stat().st_size, "drawn_s": drawn_s}
        )
    )


if __name__ == "__main__":
    main()
