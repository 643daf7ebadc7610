"""Write tests/reference/<scenario>.json: `fedgc simulate` of the shipped scenario as
tests/test_reference_runs.py runs it (plain_scenario: server.acceleration none), keeping the keys that
test reads. Only for a change of the maths that moves the references on purpose, in the same commit.

    .venv/bin/python tests/reference/make_reference.py tep [default mean_shift ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_reference_runs import REFERENCE, plain_scenario

from fedgc.cli import main

TOP = ("clients", "dims", "A_s", "strength", "statistic", "log10_pvalue", "pvalue", "edges", "rounds", "converged")
EVALUATION = ("auroc", "relative_error_vs_oracle", "relative_error_vs_truth", "oracle_rounds")
WINDOW = ("index", "start", "end", "strength", "log10_pvalue", "edges", "rounds")
ALERT = ("window", "time", "target", "source", "kind", "strength_before", "strength_after", "pvalue", "log10_pvalue")


def reference(result: dict[str, Any]) -> dict[str, Any]:
    """The kept part of a result.json."""
    out = {key: result[key] for key in TOP}
    out["history"] = [{k: h[k] for k in ("round", "loss", "change")} for h in result["history"]]
    out["evaluation"] = {k: result["evaluation"].get(k) for k in EVALUATION}
    if "flowsheet" in result:
        out["flowsheet"] = result["flowsheet"]
    if "origin" in result:
        out["origin"] = {
            run: {
                "threshold": rec["threshold"],
                "ranking": rec["ranking"],
                "first_crossing": {c: v.get("first_crossing") for c, v in rec["clients"].items()},
            }
            for run, rec in result["origin"].items()
        }
    if result.get("streaming"):
        stream = result["streaming"]
        out["streaming"] = {
            "windows": [{k: w[k] for k in WINDOW} for w in stream["windows"]],
            "alerts": [{k: a[k] for k in ALERT} for a in stream["alerts"]],
        }
    return out


def write(scenario: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        if main(["simulate", str(plain_scenario(scenario, Path(tmp))), "--out", str(out), "--quiet"]) != 0:
            raise SystemExit(f"{scenario}: the run failed")
        result = json.loads((out / "result.json").read_text())
    path = REFERENCE / f"{scenario}.json"
    path.write_text(json.dumps(reference(result), indent=1))
    return path


if __name__ == "__main__":
    for name in sys.argv[1:] or ["default", "tep", "mean_shift"]:
        print(write(name))
