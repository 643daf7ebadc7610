"""What a `fedgc` command imports and how long a user waits: per heavy package, and per command.

One command (`-- ARGS`): runs it under `python -X importtime` in a fresh process, rebuilds the import
tree from its stderr (a module's line follows the lines of the modules it imported, one indentation level
deeper), and prints, for each heavy package (torch, opacus, flwr, ray, matplotlib, scipy's submodules,
statsmodels, pandas, networkx, sklearn, yaml, ...), its cumulative import time and the chain of fedgc
modules above its first import.

    .venv/bin/python benchmarks/import_costs.py -- -m fedgc.cli --help
    .venv/bin/python benchmarks/import_costs.py -- -m fedgc.cli run --data a.csv --data b.csv --out /tmp/o --quiet

The user's waits (`--table`): each command a fresh `python -m fedgc.cli ...` process, repeated and
interleaved, median wall and CPU seconds (user + system of the child):

    help            `fedgc --help`
    missing config  `fedgc run missing.yaml --out OUT` (no such file)
    YAML typo       `fedgc run typo.yaml --out OUT` (a misspelt section: 'sever:')
    missing data    `fedgc run --data nofile.csv --data nofile2.csv --out OUT`
    first round     `fedgc run --data siteNNN.csv ... --out OUT`: time until the progress line of round 1
    whole run       the same run, to its exit (rounds, result.json, report.md; no figures)

on per-site CSVs written by benchmarks/make_long_csvs.py (default 5 sites x 20 sensors x 4000 steps, the
problem of issue 17's first row). `--before DIR` runs every command also against another checkout of
fedgc (e.g. a `git worktree` of an older commit; its fedgc package is put first on the child's path),
interleaved with this one, and adds the ratio this / before. A last column lists the heavy packages
each command of this checkout imported (from one more run under -X importtime, not timed).

    git worktree add /tmp/fedgc-before main
    .venv/bin/python benchmarks/import_costs.py --table --before /tmp/fedgc-before --repeats 5
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "opacus", "flwr", "ray", "matplotlib", "statsmodels", "pandas", "networkx", "sklearn", "yaml",
         "grpc", "sympy", "scipy", "jsonschema", "plotly", "pydantic", "numpy")  # fmt: skip
# Heavy packages named in the table's last column (numpy, scipy.linalg, pydantic, yaml are the floor).
NOTED = ("torch", "opacus", "flwr", "ray", "matplotlib", "statsmodels", "pandas", "networkx", "jsonschema",
         "scipy.stats", "scipy.signal")  # fmt: skip
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
ROOT = Path(__file__).resolve().parents[1]


def parse(stderr: str) -> list[dict]:
    """Import events in order, each with self/cumulative microseconds, depth and its parent's index."""
    events = []
    for line in stderr.splitlines():
        m = LINE.match(line)
        if m:
            events.append({"self": int(m.group(1)), "cum": int(m.group(2)), "depth": len(m.group(3)) // 2,
                           "name": m.group(4), "parent": None})  # fmt: skip
    pending: dict[int, list[int]] = {}  # depth -> events waiting for their parent (one level up)
    for i, e in enumerate(events):
        for child in pending.pop(e["depth"] + 1, []):
            events[child]["parent"] = i
        pending.setdefault(e["depth"], []).append(i)
    return events


def key(name: str) -> str | None:
    top = name.split(".")[0]
    if top == "scipy":
        parts = name.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 and not parts[1].startswith("_") else None
    return top if top in HEAVY else None


def report(events: list[dict]) -> list[tuple[str, float, str]]:
    seen: dict[str, tuple[float, str]] = {}
    for i, e in enumerate(events):
        k = key(e["name"])
        if k is None or k in seen:
            continue
        # the outermost event of this package: walk up while the parent is the same package
        j = i
        while events[j]["parent"] is not None and key(events[events[j]["parent"]]["name"]) == k:
            j = events[j]["parent"]
        chain, p = [], events[j]["parent"]
        while p is not None:
            if events[p]["name"].startswith(("fedgc", "clients", "server")):
                chain.append(events[p]["name"])
            p = events[p]["parent"]
        via = " <- ".join(chain) if chain else "(top level)"
        seen[k] = (events[j]["cum"] / 1e6, via)
    return sorted(((k, t, via) for k, (t, via) in seen.items()), key=lambda r: -r[1])


def one_command(args: list[str]) -> None:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    events = parse(proc.stderr)
    total = sum(e["cum"] for e in events if e["depth"] == 0) / 1e6
    print(f"`python {' '.join(args)}`: exit {proc.returncode}, wall {wall:.2f} s, imports {total:.2f} s "
          f"({len(events)} modules)")  # fmt: skip
    print("| package (first import) | cumulative import s | imported by (innermost fedgc module first) |")
    print("|---|---:|---|")
    for k, t, via in report(events):
        if t >= 0.01:
            print(f"| {k} | {t:.2f} | {via} |")


# ------------------------------------------------------------------------------------------------ table


def child_env(tree: Path) -> dict[str, str]:
    """The child imports fedgc from `tree` (first on its path), whatever the venv has installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FEDGC_FAULT_KILL_AFTER_ROUND", None)
    return env


def timed(argv: list[str], tree: Path, *, until: str | None = None) -> tuple[float, float, float | None, int]:
    """(wall s to exit, CPU s of the child, wall s until a stderr line starting with `until` or None, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=tree, env=child_env(tree), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = None
    assert proc.stderr is not None
    for line in proc.stderr:
        if first is None and until is not None and line.startswith(until):
            first = time.perf_counter() - t0
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, first, proc.returncode


def imported(argv: list[str], tree: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=tree, env=child_env(tree),
                          capture_output=True, text=True)  # fmt: skip
    names = {key(e["name"]) for e in parse(proc.stderr)}
    return [n for n in NOTED if n in names]


def commands(work: Path, files: list[Path]) -> list[tuple[str, list[str], str | None]]:
    """(label, argv after `python`, stderr prefix to time or None) of every command of the table."""
    cli = ["-m", "fedgc.cli"]
    typo = work / "typo.yaml"
    typo.write_text("name: typo\nclients:\n" + "".join(f"  - {{name: c{i}, data: {f}}}\n" for i, f in enumerate(files))
                    + "sever: {max_rounds: 5}\n")  # fmt: skip
    data = [a for f in files for a in ("--data", str(f))]
    return [
        ("`fedgc --help`", [*cli, "--help"], None),
        (
            "`fedgc run missing.yaml` (error)",
            [*cli, "run", str(work / "missing.yaml"), "--out", str(work / "o1")],
            None,
        ),
        ("`fedgc run typo.yaml` ('sever:', error)", [*cli, "run", str(typo), "--out", str(work / "o2")], None),
        (
            "`fedgc run --data nofile.csv` (error)",
            [
                *cli,
                "run",
                "--data",
                str(work / "nofile.csv"),
                "--data",
                str(work / "nofile2.csv"),
                "--out",
                str(work / "o3"),
            ],
            None,
        ),
        (f"`fedgc run` {len(files)} CSVs: first round", [*cli, "run", *data, "--out", str(work / "run")], "round "),
    ]


def table(args: argparse.Namespace) -> None:
    trees = {"this": ROOT}
    if args.before is not None:
        trees["before"] = args.before.resolve()
        if not (trees["before"] / "fedgc" / "cli.py").is_file():
            raise SystemExit(f"--before {args.before}: no fedgc/cli.py there")
    with tempfile.TemporaryDirectory(prefix="fedgc-import-costs-") as tmp:
        work = Path(tmp)
        if args.data:
            files = [Path(f).resolve() for f in args.data]
        else:
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_long_csvs.py"), "--out", str(work / "csv"),
                            "--sites", str(args.sites), "--sensors", str(args.sensors), "--steps", str(args.steps)],
                           check=True, capture_output=True)  # fmt: skip
            files = sorted((work / "csv").glob("site*.csv"))
        cmds = commands(work, files)
        labels = [c[0] for c in cmds] + [f"`fedgc run` {len(files)} CSVs: whole run"]
        walls: dict[tuple[str, str], list[float]] = {(lb, t): [] for lb in labels for t in trees}
        cpus: dict[tuple[str, str], list[float]] = {(lb, t): [] for lb in labels for t in trees}
        codes: dict[tuple[str, str], int] = {}
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeats):
            for label, argv, until in cmds:
                for name, tree in trees.items():
                    out = work / "run"
                    if until is not None and out.exists():
                        subprocess.run(["rm", "-rf", str(out)], check=True)
                    wall, cpu, first, code = timed(argv, tree, until=until)
                    codes[(label, name)] = code
                    if until is None:
                        walls[(label, name)].append(wall)
                        cpus[(label, name)].append(cpu)
                    else:
                        walls[(label, name)].append(first if first is not None else float("nan"))
                        walls[(labels[-1], name)].append(wall)
                        cpus[(labels[-1], name)].append(cpu)
            loads.append(os.getloadavg()[0])
        noted = {label: imported(argv, ROOT) for label, argv, _ in cmds}
    med = {k: statistics.median(v) for k, v in walls.items() if v}
    cpu = {k: statistics.median(v) for k, v in cpus.items() if v}
    print(f"{len(files)} CSV files; {args.repeats} repeats, interleaved; medians; load average (1 min) "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")  # fmt: skip
    head = "| command | exit | wall s | CPU s |"
    rule = "|---|---:|---:|---:|"
    if "before" in trees:
        head += " wall s before | CPU s before | wall this / before |"
        rule += "---:|---:|---:|"
    print(head + " heavy packages imported (this checkout) |")
    print(rule + "---|")
    for label in labels:
        row = (
            f"| {label} | {codes.get((label, 'this'), codes.get((cmds[-1][0], 'this')))} | {med[(label, 'this')]:.2f} |"
        )
        row += f" {cpu[(label, 'this')]:.2f} |" if (label, "this") in cpu else " |"
        if "before" in trees:
            row += f" {med[(label, 'before')]:.2f} |"
            row += f" {cpu[(label, 'before')]:.2f} |" if (label, "before") in cpu else " |"
            row += f" {med[(label, 'this')] / med[(label, 'before')]:.2f} |"
        row += f" {', '.join(noted.get(label, [])) or '-'} |" if label in noted else " (as above) |"
        print(row)
    print("(first round: wall time from the process start to round 1's progress line; CPU for it is in the "
          "whole run's column)")  # fmt: skip


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        one_command(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", action="store_true", help="the table of waits (else: give `-- ARGS` for one command)")
    p.add_argument("--before", type=Path, default=None, help="another fedgc checkout to compare with")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", nargs="+", default=None, help="per-site CSVs (default: written by make_long_csvs.py)")
    p.add_argument("--sites", type=int, default=5)
    p.add_argument("--sensors", type=int, default=20)
    p.add_argument("--steps", type=int, default=4000)
    args = p.parse_args(argv)
    if not args.table:
        p.error("give --table, or `-- ARGS` for one command's import table")
    table(args)


if __name__ == "__main__":
    main()
