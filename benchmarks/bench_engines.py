"""Engines side by side on a scenario (default: simulations/default.yaml).

    .venv/bin/python benchmarks/bench_engines.py [scenario.yaml] [--skip local,flower-sim,...]

Rows: wall time of the whole run (simulate, files, protocol; no oracle) on `local`, `flower-sim`
and `flower` (a deployment on 127.0.0.1 started here with docker-compose.yml's command lines:
SuperLink, ServerApp SuperExec, per client a SuperNode and its ClientApp runtime), the largest
|A_s - A_s(local)|, and the median round latency of the deployed engine (fedgc's push/pull
polling) next to the same deployment driven by Flower's grid.send_and_receive, measured in the
same run, and with compact messages (--message-format compact: arrays as bytes in the
ConfigRecord, 3 Flower objects per message instead of 6). Every process started here is stopped
at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedgc.app.config import EvaluationSettings, load_config
from fedgc.app.runner import EngineOptions, run


def _row(name, seconds, result, ref, latency=None, cpu=None):
    diff = float(np.abs(result.fit.A_s - ref.fit.A_s).max()) if ref is not None else 0.0
    lat = "" if latency is None else f"{latency * 1000:9.0f}"
    per_round = (
        "" if cpu is None else f"{cpu / max(1, len(result.communication.get('round_latency_s', []))) * 1000:9.0f}"
    )
    return f"| {name:<34} | {seconds:8.1f} | {result.fit.rounds:6d} | {diff:10.2e} | {lat:>9} | {per_round:>9} |"


def main(argv=None) -> int:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser()
    p.add_argument("scenario", nargs="?", default=str(ROOT / "simulations" / "default.yaml"))
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated engines to skip: local, flower-sim, flower, compact, send-and-receive",
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="runs of each deployed variant, interleaved (medians are shown)"
    )
    args = p.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    cfg = replace(load_config(args.scenario), evaluation=EvaluationSettings(oracle=False))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedgc-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        ref = run(replace(cfg, engine="local"), mode="simulate", out_dir=tmp / "local")
        rows.append(_row("local", time.perf_counter() - t, ref, ref) if "local" not in skip else None)
        if "flower-sim" not in skip:
            t = time.perf_counter()
            res = run(replace(cfg, engine="flower-sim"), mode="simulate", out_dir=tmp / "sim")
            rows.append(
                _row("flower-sim", time.perf_counter() - t, res, ref, res.communication.get("median_round_latency_s"))
            )
        if "flower" not in skip:
            from server.engine import DeployedEngine
            from server.local_deployment import LocalDeployment

            out = tmp / "deployed"
            clients = out / "clients"
            ncs = [
                {
                    "data-path": str(clients / f"{c}.csv"),
                    "client-name": c,
                    "model-path": str(clients / f"{c}_model.npz"),
                }
                for c in (f"client{i}" for i in range(cfg.synthetic.n_clients))
            ]
            variants = [("flower (deployed, push/pull 20 ms)", "arrays", DeployedEngine())]
            if "compact" not in skip:
                variants.append(("flower (deployed, compact messages)", "compact", DeployedEngine()))
            if "send-and-receive" not in skip:
                variants.append(
                    ("flower (deployed, send_and_receive)", "arrays", DeployedEngine(send_and_receive=True))
                )
            t = time.perf_counter()
            with LocalDeployment(ncs, tmp / "work") as dep:
                started = time.perf_counter() - t
                measured = {name: [] for name, _, _ in variants}
                for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits every variant
                    for name, message_format, engine in variants:
                        t, cpu = time.perf_counter(), dep.cpu_seconds()
                        options = EngineOptions(superlink=dep.address, message_format=message_format)
                        res = run(
                            replace(cfg, engine="flower"), mode="simulate", out_dir=out, options=options, flower=engine
                        )
                        measured[name].append((time.perf_counter() - t, res, dep.cpu_seconds() - cpu))
                for name, runs in measured.items():
                    latencies = [x for _, res, _ in runs for x in res.communication.get("round_latency_s", [])]
                    rows.append(_row(name, float(np.median([w for w, _, _ in runs])), runs[-1][1], ref,
                                     float(np.median(latencies)), float(np.median([c for _, _, c in runs]))))  # fmt: skip
    print(f"scenario {args.scenario}: {cfg.synthetic.n_clients} clients, T={cfg.synthetic.n_steps}, oracle off")
    print("| engine                             | wall (s) | rounds | max|dA_s|  | round ms  | CPU ms/rd |")
    print("|------------------------------------|---------:|-------:|-----------:|----------:|----------:|")
    print("\n".join(r for r in rows if r))
    if "flower" not in skip:
        print(
            f"(deployment start-up, not in the rows: {started:.1f} s; deployed rows: medians over {args.repeat} interleaved runs;"
        )
        print(" round ms: median time from pushing a round's")
        print(" messages to holding every reply, measured in the ServerApp; CPU ms/rd: CPU time of every")
        print(" deployment process (SuperLink, SuperExecs, ServerApp, SuperNodes, ClientApps) per exchange,")
        print(" the run's setup included: what a round costs the machine, whatever else runs on it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
