"""Time and memory per stage of `fedgc run` (local engine) on per-site CSV files.

Runs the real CLI (`fedgc.cli.main(["run", "--data", ..., "--out", ..., "--quiet"])`) in this process with
thin wrappers around the stage functions, and a thread that samples the process's RSS every 5 ms:

  read+clean      fedgc.app.clients.read_table (each client's CSV, column policies), including
  cleaning        fedgc.data.csv.apply_policies (mostly-missing, constant and held columns)
  identify        fedgc.app.clients.identify_model (standardise, PCA, A/Q/R), including
  parallel anal.  fedgc.core.local_model.choose_state_dim (the permutations)
  window proj.    fedgc.protocol.session.prepare_window (C^T R^-1 y_t, the filter's steady state)
  fingerprint     the run's config fingerprint (sha256 of every data file, for the checkpoint)
  rounds          fedgc.app.runner.run_protocol (every exchange and update, the GC tests), including
  client rounds   fedgc.protocol.transport.LocalTransport.exchange (the clients' filters, all clients)
  augmentations   fedgc.protocol.loop.augmentations (the server's s_t for every client)
  statistics      fedgc.protocol.loop.regression_stats (the server's sums over t)
  checkpoint      fedgc.app.checkpoint.save_checkpoint (every round's states, written and fsynced)
  GC tests        fedgc.protocol.loop.granger_tests (the p-values)
  oracle          fedgc.analysis.oracle.oracle_fit
  report          fedgc.cli's write_outputs (result.json, report.md; the figures with --figures)

Per stage: calls, wall and CPU seconds (summed over calls; nested stages are also inside their parent; the
local engine builds and runs clients on two threads, so stages of different clients overlap and a stage's
summed wall time can exceed the run's; CPU time is the calling thread's (time.thread_time: BLAS worker
threads are not in it) and depends less on other load than wall time), the highest RSS seen
while it ran, and the RSS when its last call returned (what it left behind). Startup (imports) is the time
before the first stage. Writes the table and a JSON record.

    .venv/bin/python benchmarks/make_long_csvs.py --out /tmp/long --sites 20 --sensors 50 --steps 52560
    .venv/bin/python benchmarks/profile_run.py /tmp/long/site*.csv --out /tmp/long-out [--no-oracle]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class Stages:
    def __init__(self) -> None:
        self.stats: dict[str, dict] = {}
        self.active: dict[str, int] = {}
        self.lock = threading.Lock()
        self.first = None
        self.stop = False
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self.stop:
            r = rss_mb()
            with self.lock:
                for name in self.active:
                    s = self.stats[name]
                    s["peak_mb"] = max(s["peak_mb"], r)
            time.sleep(0.005)

    def wrap(self, module, attr: str, name: str) -> None:
        inner = getattr(module, attr)

        def wrapper(*args, **kwargs):
            with self.lock:
                if self.first is None:
                    self.first = time.perf_counter()
                s = self.stats.setdefault(
                    name, {"calls": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_mb": 0.0, "rss_after_mb": 0.0}
                )
                self.active[name] = self.active.get(name, 0) + 1
                s["peak_mb"] = max(s["peak_mb"], rss_mb())
            t, c = time.perf_counter(), time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                with self.lock:
                    s["wall_s"] += time.perf_counter() - t
                    s["cpu_s"] += time.thread_time() - c
                    s["calls"] += 1
                    s["rss_after_mb"] = rss_mb()
                    s["peak_mb"] = max(s["peak_mb"], s["rss_after_mb"])
                    self.active[name] -= 1
                    if not self.active[name]:
                        del self.active[name]

        setattr(module, attr, wrapper)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-oracle", action="store_true", help="run from a config with evaluation.oracle: false")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import fedgc.analysis.oracle  # looked up by name when a run fits it: wrapped here, where it is defined
    import fedgc.app.checkpoint
    import fedgc.app.clients
    import fedgc.app.evaluation
    import fedgc.app.runner
    import fedgc.cli
    import fedgc.core.local_model
    import fedgc.data.csv
    import fedgc.protocol.loop
    import fedgc.protocol.session
    import fedgc.protocol.transport
    import fedgc.report.result_json

    t_imports = time.perf_counter() - T0
    st = Stages()
    st.wrap(fedgc.app.clients, "read_table", "read+clean")
    st.wrap(fedgc.data.csv, "apply_policies", "cleaning")
    st.wrap(fedgc.app.clients, "identify_model", "identify")
    st.wrap(fedgc.core.local_model, "choose_state_dim", "parallel analysis")
    st.wrap(fedgc.protocol.session, "prepare_window", "window projection")
    st.wrap(fedgc.app.runner, "config_fingerprint", "fingerprint")
    st.wrap(fedgc.app.runner, "run_protocol", "rounds + GC tests")
    st.wrap(fedgc.protocol.transport.LocalTransport, "exchange", "client rounds")
    st.wrap(fedgc.protocol.loop, "augmentations", "augmentations")
    st.wrap(fedgc.protocol.loop, "regression_stats", "statistics")
    st.wrap(fedgc.app.checkpoint, "save_checkpoint", "checkpoint")
    st.wrap(fedgc.protocol.loop, "granger_tests", "GC tests")
    st.wrap(fedgc.analysis.oracle, "oracle_fit", "oracle")
    st.wrap(fedgc.report.result_json, "write_outputs", "report")
    argv = ["run"]
    # the --no-oracle config goes here, not into --out (fedgc wants an empty output folder)
    scratch = tempfile.TemporaryDirectory(prefix="fedgc-profile-")
    if args.no_oracle:
        import yaml

        cfg = {"name": "profile", "clients": [{"name": Path(f).stem, "data": str(Path(f).resolve())} for f in args.files],
               "evaluation": {"oracle": False}}  # fmt: skip
        config = Path(scratch.name) / "profile.yaml"
        config.write_text(yaml.safe_dump(cfg))
        argv.append(str(config))
    else:
        argv += [a for f in args.files for a in ("--data", f)]
    argv += ["--out", str(args.out), "--quiet"]
    t, c = time.perf_counter(), time.process_time()
    try:
        rc = fedgc.cli.main(argv)
    finally:
        scratch.cleanup()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    st.stop = True
    if rc != 0:  # the folder may hold an earlier run's result.json: no table from it
        sys.exit(f"fedgc run failed (exit {rc}); no measurements")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = json.loads((args.out / "result.json").read_text())
    record = {"rc": rc, "files": len(args.files), "imports_s": t_imports, "run_s": wall, "run_cpu_s": cpu, "ru_maxrss_mb": peak,
              "dims": result.get("dims"), "rounds": result.get("rounds"), "stages": st.stats,
              "load_avg": os.getloadavg()}  # fmt: skip
    print(f"{len(args.files)} files; imports {t_imports:.1f} s; run {wall:.1f} s wall, {cpu:.1f} s CPU; peak RSS {peak:.0f} MB; "
          f"dims {result.get('dims')}; rounds {result.get('rounds')}; load average {os.getloadavg()}")  # fmt: skip
    print("| stage | calls | wall s | CPU s | peak RSS MB while running | RSS MB after |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s in st.stats.items():
        print(
            f"| {name} | {s['calls']} | {s['wall_s']:.2f} | {s['cpu_s']:.2f} | {s['peak_mb']:.0f} | {s['rss_after_mb']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    sys.exit(rc)


if __name__ == "__main__":
    main()
