"""Synthetic multi-client industrial systems with known Granger-causal truth.

    h_t   = A_t h_{t-1} + v_t,        v_t ~ N(0, Q),  A_t = [A_t^{mn}]  (M x M blocks)
    y_t^m = C^m h_t^m + w_t^m,        w_t^m ~ N(0, R^m)

Client n Granger-causes client m iff A^{mn} != 0. A_t is piecewise constant:
perturbations switch a block on, off, or rescale it at given times (the
mean-shift experiments of streaming mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from fedgc.core.kalman import filter_scan
from fedgc.core.local_model import LocalModel
from fedgc.data.synthetic_spec import Perturbation, SystemSpec
from fedgc.errors import ConfigError

__all__ = ["Perturbation", "SyntheticData", "SyntheticSystem", "SystemSpec", "make_system", "simulate"]


@dataclass(frozen=True)
class SyntheticSystem:
    """Ground truth. A: (D, D) joint transition at t = 0; patterns: the nonzero block each
    ordered pair takes when switched on; edges: (M, M) bool [target, source] at t = 0."""

    dims: tuple[int, ...]
    A: np.ndarray
    Q: np.ndarray
    C: tuple[np.ndarray, ...]
    R: tuple[np.ndarray, ...]
    edges: np.ndarray
    patterns: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.dims)])

    def block(self, X: np.ndarray, m: int, n: int) -> np.ndarray:
        o = self.offsets
        return X[o[m] : o[m + 1], o[n] : o[n + 1]]

    def local_model(self, m: int) -> LocalModel:
        """The true local model (A^{mm}, C^m, Q^{mm}, R^m) of client m."""
        return LocalModel(
            A=self.block(self.A, m, m).copy(), C=self.C[m], Q=self.block(self.Q, m, m).copy(), R=self.R[m]
        )


@dataclass(frozen=True)
class SyntheticData:
    """system: the truth; y: per-client measurements (T, P_m); states: (T, D) true h_{1:T};
    edges_over_time: (n_segments, M, M) with segment_starts (n_segments,)."""

    system: SyntheticSystem
    y: tuple[np.ndarray, ...]
    states: np.ndarray
    segment_starts: np.ndarray
    edges_over_time: np.ndarray


def make_system(spec: SystemSpec, rng: np.random.Generator) -> SyntheticSystem:
    M, dims = spec.n_clients, spec.state_dims
    offsets = np.concatenate([[0], np.cumsum(dims)])
    D = int(offsets[-1])
    A = np.zeros((D, D))
    lo, hi = spec.self_eig_range
    for m in range(M):
        U = _random_orthogonal(dims[m], rng)
        A[offsets[m] : offsets[m + 1], offsets[m] : offsets[m + 1]] = (U * rng.uniform(lo, hi, dims[m])) @ U.T
    patterns = np.zeros((D, D))
    for m in range(M):
        for n in range(M):
            if m != n:
                block = rng.standard_normal((dims[m], dims[n]))
                block *= spec.edge_strength / np.linalg.norm(block, 2)
                patterns[offsets[m] : offsets[m + 1], offsets[n] : offsets[n + 1]] = block
    pairs = [(m, n) for m in range(M) for n in range(M) if m != n]
    n_edges = round(spec.edge_density * len(pairs))
    chosen = rng.choice(len(pairs), size=n_edges, replace=False)
    edges = np.zeros((M, M), dtype=bool)
    for k in chosen:
        m, n = pairs[k]
        edges[m, n] = True
        A[offsets[m] : offsets[m + 1], offsets[n] : offsets[n + 1]] = patterns[
            offsets[m] : offsets[m + 1], offsets[n] : offsets[n + 1]
        ]
    A = _stabilise_offdiagonal(A, offsets, spec.max_spectral_radius)
    Q = np.eye(D)
    # Lyapunov covariance of the stationary state gives the signal power per client.
    Sigma_h = scipy.linalg.solve_discrete_lyapunov(A, Q)
    C, R = [], []
    for m in range(M):
        P, d = spec.obs_dims[m], dims[m]
        Cm = rng.standard_normal((P, d)) / np.sqrt(d)
        Sm = Sigma_h[offsets[m] : offsets[m + 1], offsets[m] : offsets[m + 1]]
        noise_var = np.trace(Cm @ Sm @ Cm.T) / (P * spec.snr)
        C.append(Cm)
        R.append(noise_var * np.eye(P))
    return SyntheticSystem(tuple(dims), A, Q, tuple(C), tuple(R), edges, patterns)


def _random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    Qm, Rm = np.linalg.qr(rng.standard_normal((d, d)))
    return Qm * np.sign(np.diag(Rm))


def _stabilise_offdiagonal(A: np.ndarray, offsets: np.ndarray, target: float) -> np.ndarray:
    """Shrink the off-diagonal blocks until the spectral radius is at most `target`."""
    if np.max(np.abs(np.linalg.eigvals(A))) <= target:
        return A
    mask = np.ones_like(A, dtype=bool)
    for m in range(len(offsets) - 1):
        mask[offsets[m] : offsets[m + 1], offsets[m] : offsets[m + 1]] = False
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        B = np.where(mask, A * mid, A)
        if np.max(np.abs(np.linalg.eigvals(B))) <= target:
            lo = mid
        else:
            hi = mid
    return np.where(mask, A * lo, A)


def simulate(spec: SystemSpec, rng: np.random.Generator, system: SyntheticSystem | None = None) -> SyntheticData:
    """Draw a system (unless given) and T steps of states and measurements from it."""
    if system is None:
        system = make_system(spec, rng)
    T, D = spec.n_steps, system.A.shape[0]
    o = system.offsets
    A = system.A.copy()
    starts = sorted({0} | {p.time for p in spec.perturbations})
    edges_over_time = []
    noise = rng.standard_normal((T, D)) @ np.linalg.cholesky(system.Q).T
    h0 = rng.multivariate_normal(np.zeros(D), scipy.linalg.solve_discrete_lyapunov(A, system.Q))
    states = np.empty((T, D))
    for i, start in enumerate(starts):
        for p in spec.perturbations:
            if p.time == start:
                sl = (slice(o[p.target], o[p.target + 1]), slice(o[p.source], o[p.source + 1]))
                if p.action == "on":
                    A[sl] = system.patterns[sl]
                elif p.action == "off":
                    A[sl] = 0.0
                else:
                    A[sl] = A[sl] * p.factor
        if np.max(np.abs(np.linalg.eigvals(A))) >= 1.0:
            raise ConfigError(f"the perturbation at t={start} makes the system unstable")
        end = starts[i + 1] if i + 1 < len(starts) else T
        prev = h0 if start == 0 else states[start - 1]
        states[start:end] = filter_scan(A, noise[start:end], prev)
        edges_over_time.append(
            np.array(
                [
                    [m != n and np.any(A[o[m] : o[m + 1], o[n] : o[n + 1]] != 0) for n in range(len(o) - 1)]
                    for m in range(len(o) - 1)
                ]
            )
        )
    y = []
    for m in range(len(o) - 1):
        Rm = system.R[m]
        w = rng.standard_normal((T, Rm.shape[0])) @ np.linalg.cholesky(Rm).T
        y.append(states[:, o[m] : o[m + 1]] @ system.C[m].T + w)
    return SyntheticData(system, tuple(y), states, np.array(starts), np.array(edges_over_time))
