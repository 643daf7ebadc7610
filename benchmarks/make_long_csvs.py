"""Write per-site CSV files of a long synthetic plant run: M sites, P sensors each, T rows.

The system is fedgc.data.synthetic's (D latent states per site, a random sparse graph between sites,
SNR 1); the joint state is simulated once (T x M*D floats), and each site's measurements
y^m = C^m h^m + w^m are written in chunks of rows, so memory stays at the states plus one chunk
whatever T is. Values are written with `--digits` decimals (default 6: about 475 bytes per row for
P = 50, 250 MB per site for a year of 1-minute data, T = 525,600). With --timestamps, a first
column `timestamp` holds ISO-8601 minutes from 2024-01-01.

The truth (edges [target, source], dims) goes to OUT/truth.json.

    .venv/bin/python benchmarks/make_long_csvs.py --out /tmp/long --sites 20 --sensors 50 --steps 525600
    .venv/bin/python benchmarks/make_long_csvs.py --out /tmp/two --sites 2 --sensors 50 --steps 100000   # (sites >= 2)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def write_sites(
    out: Path,
    *,
    sites: int,
    sensors: int,
    steps: int,
    states: int = 3,
    density: float | None = None,
    seed: int = 0,
    digits: int = 6,
    timestamps: bool = False,
    chunk: int = 50_000,
) -> dict:
    import scipy.linalg

    from fedgc.core.kalman import filter_scan
    from fedgc.data.synthetic import SystemSpec, make_system

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    density = min(1.0, 2.0 / (sites - 1)) if density is None else density
    spec = SystemSpec(
        n_clients=sites, state_dims=states, obs_dims=sensors, edge_density=density, n_steps=max(steps, 10)
    )
    system = make_system(spec, rng)
    D = system.A.shape[0]
    o = system.offsets
    # The joint state, chunk by chunk (the noise of one chunk at a time).
    h = rng.multivariate_normal(np.zeros(D), scipy.linalg.solve_discrete_lyapunov(system.A, system.Q))
    H = np.empty((steps, D))
    for a in range(0, steps, chunk):
        b = min(a + chunk, steps)
        H[a:b] = filter_scan(system.A, rng.standard_normal((b - a, D)), h)
        h = H[b - 1]
    fmt = f"%.{digits}f"
    files = []
    for m in range(sites):
        path = out / f"site{m:03d}.csv"
        noise_sd = np.sqrt(np.diag(system.R[m]))
        with open(path, "w", encoding="ascii", newline="\n") as f:
            names = [f"s{j}" for j in range(sensors)]
            f.write(",".join((["timestamp"] if timestamps else []) + names) + "\n")
            for a in range(0, steps, chunk):
                b = min(a + chunk, steps)
                y = H[a:b, o[m] : o[m + 1]] @ system.C[m].T + rng.standard_normal((b - a, sensors)) * noise_sd
                if timestamps:
                    ts = np.datetime64("2024-01-01T00:00") + np.arange(a, b).astype("timedelta64[m]")
                    rows = np.column_stack([np.datetime_as_string(ts), np.char.mod(fmt, y)])
                    np.savetxt(f, rows, fmt="%s", delimiter=",")
                else:
                    np.savetxt(f, y, fmt=fmt, delimiter=",")
        files.append(str(path))
    truth = {
        "edges": system.edges.astype(int).tolist(),
        "dims": list(system.dims),
        "steps": steps,
        "sensors": sensors,
        "files": files,
    }
    (out / "truth.json").write_text(json.dumps(truth))
    return truth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sites", type=int, default=20)
    p.add_argument("--sensors", type=int, default=50)
    p.add_argument("--steps", type=int, default=525_600)
    p.add_argument("--states", type=int, default=3)
    p.add_argument("--density", type=float, default=None, help="edge density (default: in-degree 2)")
    p.add_argument("--digits", type=int, default=6)
    p.add_argument("--timestamps", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.perf_counter()
    truth = write_sites(
        args.out,
        sites=args.sites,
        sensors=args.sensors,
        steps=args.steps,
        states=args.states,
        density=args.density,
        seed=args.seed,
        digits=args.digits,
        timestamps=args.timestamps,
    )
    size = sum(Path(f).stat().st_size for f in truth["files"])
    print(f"wrote {len(truth['files'])} files, {size / 1e6:.1f} MB, in {time.perf_counter() - t0:.1f} s to {args.out}")


if __name__ == "__main__":
    main()
