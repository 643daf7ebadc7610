"""Rounds of the server's fixed-point iteration with and without server.acceleration (fedgc.protocol.acceleration).

Every scenario runs three times on the local engine: plain rounds at its own tol ("none"), plain rounds to
tol 1e-12 (the unaccelerated fixed point, "fixed point" below) and accelerated ("secant") at its own tol.
The table gives the rounds of each, the relative difference ||A_s - A_fp||_F / ||A_fp||_F of the plain and the
accelerated result to that fixed point, whether the edges agree with the plain run's, the largest change of
log10 p over all pairs, and the protocol's wall time (it includes the server's prediction; the load of the
machine is printed with the table). Streaming scenarios count the rounds of every window and compare the last
window's A_s and the alerts.

Scenarios: the shipped default, tep, mean_shift and private configs; a tanks-like plant (cascades of tanks
within each site, the last tank of a site feeding the first of the next, a recycle from the last site to the
first; persistent local dynamics) with identified local models; and the default system with identified
models, a learned f_theta, missing measurements, and slow local dynamics (the cases where the clients'
response is not exactly linear, or the plain rounds must relax).

    .venv/bin/python benchmarks/bench_rounds.py [--only default,tanks] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fedgc.app.config import RunConfig, load_config
from fedgc.app.runner import run_local
from fedgc.core.local_model import identify
from fedgc.data.synthetic import SyntheticSystem, SystemSpec, simulate
from fedgc.protocol.loop import FitResult, run_protocol
from fedgc.protocol.session import ClientSession
from fedgc.protocol.settings import ServerConfig
from fedgc.protocol.transport import LocalTransport

REPO = Path(__file__).resolve().parents[1]
FIXED_POINT_TOL = 1e-12


class Outcome:
    """What one run gives the table: rounds, A_s, the GC result's p-values and edges, alerts, seconds."""

    def __init__(self, rounds: int, A_s: np.ndarray, pvalue: np.ndarray, edges: np.ndarray, converged: bool,
                 seconds: float, alerts: list[tuple[int, int, int, str]] | None = None) -> None:  # fmt: skip
        self.rounds, self.A_s, self.pvalue, self.edges = rounds, A_s, pvalue, edges
        self.converged, self.seconds, self.alerts = converged, seconds, alerts


Runner = Callable[[dict[str, Any]], Outcome]


def config_runner(cfg: RunConfig) -> Runner:
    """Runs of a shipped config on the local engine (no oracle) with server settings changed."""

    def go(server: dict[str, Any]) -> Outcome:
        c = replace(cfg, evaluation=replace(cfg.evaluation, oracle=False))
        if c.privacy is not None:  # the same privatised windows in every run (such a run is not private)
            c = replace(c, privacy=replace(c.privacy, reproducible_noise=True))
        if c.streaming is not None and "tol" in server:  # a window's rounds stop on streaming.tol
            c = replace(c, streaming=replace(c.streaming, tol=server["tol"], max_rounds=server.get("max_rounds", 10)))
            server = {k: v for k, v in server.items() if k not in ("tol", "max_rounds")}
        c = replace(c, server=replace(c.server, **server))
        t0 = time.perf_counter()
        result = run_local(c, mode="simulate", out_dir=None)
        seconds = time.perf_counter() - t0
        fit = result.fit
        alerts = None
        if result.streaming is not None:
            alerts = [(a.window, a.target, a.source, a.kind) for a in result.streaming.result.alerts]
        return Outcome(fit.rounds, fit.A_s, fit.gc.pvalue, fit.gc.edges, fit.converged, seconds, alerts)

    return go


def sessions_runner(make: Callable[[], list[ClientSession]]) -> Runner:
    """Runs of the batch protocol over in-process clients built afresh for every run."""

    def go(server: dict[str, Any]) -> Outcome:
        sessions = make()
        t0 = time.perf_counter()
        fit: FitResult = run_protocol(LocalTransport(sessions), ServerConfig(**server))
        return Outcome(fit.rounds, fit.A_s, fit.gc.pvalue, fit.gc.edges, fit.converged, time.perf_counter() - t0)

    return go


# ---------------------------------------------------------------------------------------------- scenarios


def tanks_system(n_sites: int, tanks: int, sensors: int, rng: np.random.Generator) -> SyntheticSystem:
    """Cascades of `tanks` tanks per site (level_i <- (1 - a_i) level_i + b_i level_{i-1}), the last tank of
    site m feeding the first of site m + 1 and the last site recycling into the first; each site's sensors
    read noisy mixtures of its levels and outflows."""
    D = n_sites * tanks
    A = np.zeros((D, D))
    for m in range(n_sites):
        o = m * tanks
        for i in range(tanks):
            A[o + i, o + i] = 1.0 - rng.uniform(0.04, 0.15)  # persistent: slow drainage
            if i:
                A[o + i, o + i - 1] = rng.uniform(0.05, 0.12)  # inflow from the tank above
        if m:  # the site's first tank is fed by the previous site's last tank
            A[o, o - 1] = rng.uniform(0.05, 0.1)
    A[0, D - 1] = 0.04  # recycle
    A = A * min(1.0, 0.97 / np.max(np.abs(np.linalg.eigvals(A))))
    Q = np.eye(D) * 0.1
    edges = np.zeros((n_sites, n_sites), dtype=bool)
    for m in range(1, n_sites):
        edges[m, m - 1] = True
    edges[0, n_sites - 1] = True
    C, R = [], []
    for _ in range(n_sites):
        levels = np.eye(tanks)
        flows = np.eye(tanks) - np.eye(tanks, k=-1)
        mix = rng.standard_normal((sensors - 2 * tanks, tanks)) / np.sqrt(tanks)
        Cm = np.vstack([levels, flows, mix])
        C.append(Cm)
        R.append(np.diag(rng.uniform(0.02, 0.1, sensors)))
    patterns = np.where(np.kron(edges, np.ones((tanks, tanks))), A, 0.0)
    return SyntheticSystem(tuple([tanks] * n_sites), A, Q, tuple(C), tuple(R), edges, patterns)


def tanks(seed: int) -> Runner:
    n_sites, n_tanks, sensors = 6, 3, 12
    spec = SystemSpec(n_clients=n_sites, state_dims=n_tanks, obs_dims=sensors, n_steps=4000)
    rng = np.random.default_rng(seed)
    data = simulate(spec, rng, system=tanks_system(n_sites, n_tanks, sensors, rng))
    models = [
        identify(y, client=f"site{m}", state_dim=n_tanks, rng=np.random.default_rng(seed + m))
        for m, y in enumerate(data.y)
    ]
    return sessions_runner(
        lambda: [ClientSession(f"site{m}", model, y) for m, (model, y) in enumerate(zip(models, data.y))]
    )


def default_variant(seed: int, *, identified: bool = False, theta: bool = False, missing: float = 0.0,
                    slow: bool = False) -> Runner:  # fmt: skip
    """The default system (or one with slow local dynamics), its clients varied."""
    spec = load_config(REPO / "simulations" / "default.yaml").synthetic
    assert spec is not None
    if slow:
        spec = SystemSpec(
            n_clients=5, state_dims=2, obs_dims=10, edge_density=0.3, n_steps=2000, self_eig_range=(0.8, 0.9)
        )
    data = simulate(spec, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1000)
    ys = []
    for y in data.y:
        y = y.copy()
        if missing:
            y[rng.random(y.shape) < missing] = np.nan
        ys.append(y)
    models = [
        identify(y, client=f"client{m}", rng=np.random.default_rng(seed + m))
        if identified
        else data.system.local_model(m)
        for m, y in enumerate(ys)
    ]
    return sessions_runner(
        lambda: [
            ClientSession(f"client{m}", model, y, learn_theta=theta) for m, (model, y) in enumerate(zip(models, ys))
        ]
    )


def scenarios(seed: int) -> dict[str, tuple[Callable[[], Runner], dict[str, Any]]]:
    """name -> (build the runner, the scenario's own server settings)."""

    def shipped(name: str) -> tuple[Callable[[], Runner], dict[str, Any]]:
        cfg = load_config(REPO / "simulations" / f"{name}.yaml")
        tol = cfg.streaming.tol if cfg.streaming is not None else cfg.server.tol
        rounds = cfg.streaming.max_rounds if cfg.streaming is not None else cfg.server.max_rounds
        return (lambda: config_runner(cfg)), {"tol": tol, "max_rounds": rounds}

    batch = {"tol": 1e-6, "max_rounds": 100}
    return {
        "default": shipped("default"),
        "tep": shipped("tep"),
        "mean_shift (streaming)": shipped("mean_shift"),
        "private": shipped("private"),
        "tanks, identified models": ((lambda: tanks(seed)), batch),
        "default, identified models": ((lambda: default_variant(seed, identified=True)), batch),
        "default, learned f_theta": ((lambda: default_variant(seed, theta=True)), batch),
        "default, 2% missing values": ((lambda: default_variant(seed, missing=0.02)), batch),
        "slow local dynamics (0.8-0.9)": ((lambda: default_variant(2002, slow=True)), batch),
    }


# ---------------------------------------------------------------------------------------------- table


def relative(a: np.ndarray, b: np.ndarray) -> float:
    keep = ~np.isnan(b)
    return float(np.linalg.norm((a - b)[keep]) / max(float(np.linalg.norm(b[keep])), 1e-300))


def log10_change(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        la, lb = np.log10(np.clip(a, 1e-300, None)), np.log10(np.clip(b, 1e-300, None))
    keep = np.isfinite(la) & np.isfinite(lb)
    return float(np.max(np.abs(la - lb)[keep])) if keep.any() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated scenario names (prefixes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chosen = scenarios(args.seed)
    if args.only:
        keys = [k.strip() for k in args.only.split(",")]
        chosen = {n: v for n, v in chosen.items() if any(n.startswith(k) for k in keys)}
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    print(
        f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; cores: {os.cpu_count()}; "
        f"OPENBLAS_NUM_THREADS={threads}"
    )
    header = (
        "| scenario | tol | rounds none | rounds secant | rounds to 1e-12 | none vs fixed point | secant vs fixed point "
        "| edges equal | max abs change log10 p | protocol s none | protocol s secant |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, (build, own) in chosen.items():
        runner = build()
        plain = runner({**own, "acceleration": "none"})
        fixed = runner({**own, "tol": FIXED_POINT_TOL, "max_rounds": 400, "acceleration": "none"})
        fast = runner({**own, "acceleration": "secant"})
        edges = bool(np.array_equal(np.asarray(fast.edges, dtype=object), np.asarray(plain.edges, dtype=object)))
        if plain.alerts is not None:
            edges = edges and fast.alerts == plain.alerts
        flag = lambda o: "" if o.converged else " (not converged)"
        print(f"| {name} | {own['tol']:g} | {plain.rounds}{flag(plain)} | {fast.rounds}{flag(fast)} | {fixed.rounds}{flag(fixed)} "
              f"| {relative(plain.A_s, fixed.A_s):.1e} | {relative(fast.A_s, fixed.A_s):.1e} | {'yes' if edges else 'NO'} "
              f"| {log10_change(fast.pvalue, plain.pvalue):.1e} | {plain.seconds:.2f} | {fast.seconds:.2f} |", flush=True)  # fmt: skip
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        "Streaming rows count every window's rounds; their A_s is the last window's, and 'edges equal' also "
        "requires the same alerts. 'rounds to 1e-12' is the plain iteration's."
    )


if __name__ == "__main__":
    main()
