"""Which heavy modules a `fedgc` command imports, what they cost, and which fedgc module pulls each in.

Runs the command under `python -X importtime` in a fresh process, rebuilds the import tree from its
stderr (a module's line follows the lines of the modules it imported, one indentation level deeper),
and prints, for each heavy package (torch, opacus, flwr, matplotlib, scipy's submodules, statsmodels,
pandas, networkx, sklearn, yaml), its cumulative import time and the chain of fedgc modules above its
first import.

    .venv/bin/python benchmarks/import_costs.py -- -m fedgc.cli --help
    .venv/bin/python benchmarks/import_costs.py -- -m fedgc.cli run --data a.csv --data b.csv --out /tmp/o --quiet
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

HEAVY = ("torch", "opacus", "flwr", "matplotlib", "statsmodels", "pandas", "networkx", "sklearn", "yaml", "grpc",
         "sympy", "scipy")  # fmt: skip
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


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


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
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


if __name__ == "__main__":
    main()
