"""Recovery errors of the retention and endurance fits on the sim chip (the models it was given are known).

- retention: the built-in relaxation (``--relax-rel``, ``--relax-tau-s``) and a replayed per-level
  retention model; relative errors of the fitted tau and sigma per HCS level, and the drift error in
  units of its standard error.
- endurance: a lognormal budget distribution (median, log-sigma, stuck-HCS share); errors of the censored
  lognormal fit in units of its standard error, and relative errors.

Runs the library functions the commands use (``hwloop.characterise.retention`` / ``cycle``). Prints one
JSON line.

    python benchmarks/characterise_recovery.py [--devices 500] [--cycle-devices 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from hwloop.characterise import cycle as C
from hwloop.characterise import retention as R
from hwloop.chip.models import EnduranceModel, RetentionModel
from hwloop.chip.sim import SimChip, SimConfig


def _h(g: np.ndarray) -> np.ndarray:
    g = np.maximum(g, 1.0)
    return g * np.sqrt(50.0 / np.maximum(g, 10.0))


def retention_builtin(n: int, relax_rel: float, tau_s: float, seed: int) -> dict:
    chip = SimChip(n_tiles=1, config=SimConfig.default().with_(relax_rel=relax_rel, relax_tau_s=tau_s), seed=seed)
    times = R.parse_schedule("log:20", 100 * tau_s, tau_s / 100)
    data = R.measure(chip, np.arange(9), n, times)
    fit = R.fit(data)
    rows = []
    for k in range(1, 9):
        want = relax_rel * float(np.sqrt(np.mean(_h(chip.g_us[data.devices[k]]) ** 2)))
        rows.append(
            {
                "level": k,
                "tau_rel_err": float(fit[k]["tau_s"] / tau_s - 1),
                "sigma_rel_err": float(fit[k]["sigma_us"] / want - 1),
                "drift_us": float(fit[k]["drift_us"]),
            }
        )
    return _summ(rows, {"relax_rel": relax_rel, "tau_s": tau_s, "devices_per_level": n})


def retention_replay(n: int, seed: int) -> dict:
    table = SimChip().table
    m = RetentionModel(
        drift_us=np.linspace(0, -6, 9),
        sigma_us=np.linspace(0.5, 4, 9),
        tau_s=np.geomspace(2, 60, 9),
        median0_us=table.medians_us,
    )
    chip = SimChip(n_tiles=1, seed=seed, retention=m)
    times = R.parse_schedule("log:20", 3000, 0.05)
    data = R.measure(chip, np.arange(9), n, times)
    fit = R.fit(data)
    rows = [
        {
            "level": k,
            "tau_rel_err": float(fit[k]["tau_s"] / m.tau_s[k] - 1),
            "sigma_rel_err": float(fit[k]["sigma_us"] / m.sigma_us[k] - 1),
            "drift_err_us": float(fit[k]["drift_us"] - m.drift_us[k]),
        }
        for k in range(1, 9)
    ]
    return _summ(rows, {"devices_per_level": n, "given": "drift 0..-6 uS, sigma 0.5..4 uS, tau 2..60 s"})


def _summ(rows: list[dict], given: dict) -> dict:
    tau = np.array([r["tau_rel_err"] for r in rows])
    sig = np.array([r["sigma_rel_err"] for r in rows])
    return {
        **given,
        "max_abs_tau_rel_err": float(np.abs(tau).max()),
        "mean_abs_tau_rel_err": float(np.abs(tau).mean()),
        "max_abs_sigma_rel_err": float(np.abs(sig).max()),
        "mean_abs_sigma_rel_err": float(np.abs(sig).mean()),
        "levels": rows,
    }


def endurance(n: int, seed: int, read_every: int) -> dict:
    given = EnduranceModel(median_cycles=300.0, log_sigma=0.5, stuck_hcs_fraction=0.4)
    chip = SimChip(n_tiles=-(-n // 16384), endurance=given, seed=seed)
    res = C.run_cycles(chip, n, 3000, read_every)
    f = C.fit_cycles(res)
    ln = f["lognormal"]
    nf = f["failed"]
    return {
        "given": given.as_dict(),
        "devices": n,
        "read_every": read_every,
        "failed": nf,
        "median_rel_err": ln["median_cycles"] / 300.0 - 1,
        "median_err_in_se": float(np.log(ln["median_cycles"] / 300.0) / ln["se_log_median"]),
        "log_sigma_err": ln["log_sigma"] - 0.5,
        "log_sigma_err_in_se": (ln["log_sigma"] - 0.5) / ln["se_log_sigma"],
        "stuck_hcs_err": f["stuck_hcs_fraction"] - 0.4,
        "stuck_hcs_err_in_se": (f["stuck_hcs_fraction"] - 0.4) / np.sqrt(0.4 * 0.6 / nf),
        "best_fit": f["best"],
        "weibull_shape": f["weibull"]["shape"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=500, help="retention devices per level")
    ap.add_argument("--cycle-devices", type=int, default=3000)
    ap.add_argument("--read-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    out = {
        "benchmark": "characterise_recovery",
        "retention_builtin": retention_builtin(a.devices, 0.05, 10.0, a.seed),
        "retention_replay": retention_replay(a.devices, a.seed),
        "endurance": endurance(a.cycle_devices, a.seed, a.read_every),
    }
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
