"""Long histories: `fedgc run` (local engine, no oracle) on M sites of P_m sensors for T steps, per stage.

For each T (default 52,560 and 525,600: a tenth of a year and a year of 1-minute data), the per-site CSVs
of benchmarks/make_long_csvs.py are written under DATA/t{T} (once; kept for later runs), then
benchmarks/profile_run.py runs the real CLI on them in a fresh process (`--no-oracle`: a config with
evaluation: {oracle: false}). Printed per run: T, M, P_m, wall and CPU seconds of the whole process
(imports included), its peak RSS (the child's ru_maxrss), the load average before and after (the machine
is shared: wall time depends on it, CPU time much less), and the seconds of each stage (the stages of
profile_run.py; clients are built and run on two threads, so per-stage seconds of overlapping clients add
up beyond the wall time).

    .venv/bin/python benchmarks/bench_long.py --data /work/longdata            # both sizes (the CSVs: ~6 GB)
    .venv/bin/python benchmarks/bench_long.py --data /tmp/long --steps 52560 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("read+clean", "cleaning", "identify", "parallel analysis", "window projection", "fingerprint", "rounds + GC tests",
          "client rounds", "augmentations", "statistics", "checkpoint", "GC tests", "report")  # fmt: skip


def ensure_data(root: Path, *, steps: int, sites: int, sensors: int) -> list[Path]:
    folder = root / f"t{steps}" if (sites, sensors) == (20, 50) else root / f"t{steps}-m{sites}-p{sensors}"
    truth = folder / "truth.json"
    if not truth.is_file():
        subprocess.run([sys.executable, str(HERE / "make_long_csvs.py"), "--out", str(folder), "--sites", str(sites),
                        "--sensors", str(sensors), "--steps", str(steps)], check=True)  # fmt: skip
    files = [Path(f) for f in json.loads(truth.read_text())["files"]]
    if len(files) != sites or not all(f.is_file() for f in files):
        raise SystemExit(f"{folder}: the CSVs of truth.json are not all there; remove the folder to write them again")
    return files


def run_once(files: list[Path], out: Path) -> dict:
    """profile_run.py on `files` in a child process: its JSON record, with the child's wall and CPU time and
    peak RSS as the kernel counted them."""
    record = out / "profile.json"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, str(HERE / "profile_run.py"), *map(str, files), "--out", str(out),
                              "--no-oracle", "--json", str(record)], stdout=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"profile_run.py failed (status {status}) on {files[0].parent}")
    rec = json.loads(record.read_text())
    rec.update(process_wall_s=wall, process_cpu_s=usage.ru_utime + usage.ru_stime, peak_gb=usage.ru_maxrss / 2**20,
               load_before=load_before, load_after=os.getloadavg())  # fmt: skip
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder for the generated CSVs (kept between runs)")
    p.add_argument("--steps", type=int, nargs="+", default=[52_560, 525_600])
    p.add_argument("--sites", type=int, default=20)
    p.add_argument("--sensors", type=int, default=50)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write every run's record here")
    args = p.parse_args()
    records = []
    for steps in args.steps:
        files = ensure_data(args.data, steps=steps, sites=args.sites, sensors=args.sensors)
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="fedgc-long-") as tmp:
                rec = run_once(files, Path(tmp))
            rec.update(T=steps, M=args.sites, P=args.sensors)
            records.append(rec)
            print(f"T={steps}: {rec['process_wall_s']:.1f} s wall, {rec['process_cpu_s']:.1f} s CPU, {rec['peak_gb']:.2f} GB, "
                  f"load {rec['load_before'][0]:.1f} -> {rec['load_after'][0]:.1f}", file=sys.stderr, flush=True)  # fmt: skip
    print(
        "| T | M | P_m | wall s | CPU s | peak RSS GB | load (1 min) before -> after | rounds | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|---:|" + "---:|" * len(STAGES))
    for r in records:
        stages = [r["stages"].get(s, {}).get("wall_s") for s in STAGES]
        print(f"| {r['T']} | {r['M']} | {r['P']} | {r['process_wall_s']:.1f} | {r['process_cpu_s']:.1f} | {r['peak_gb']:.2f} | "
              f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} | {r['rounds']} | "
              + " | ".join("-" if v is None else f"{v:.1f}" for v in stages) + " |")  # fmt: skip
    print(
        "\nStage seconds are wall seconds summed over calls (two clients at a time overlap); per-stage CPU seconds "
        "are in the JSON records (--json)."
    )
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
