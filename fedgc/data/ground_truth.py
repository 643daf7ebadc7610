"""Ground-truth systems for the identified-model Granger benchmarks (benchmarks/bench_identified.py,
benchmarks/bench_null.py) and tests: systems whose Granger graph is known, observed through per-site sensors.

Every system is a latent VAR(L) over M sites observed through per-site sensors:

    h_t   = sum_{l=1}^{L} A_l h_{t-l} + v_t,      v_t ~ N(0, Q)   (Q block diagonal)
    y_t^m = C^m h_t^m + w_t^m,                     w_t^m ~ N(0, R^m) (R^m diagonal, heteroscedastic)

Site n Granger-causes site m iff some lag block A_l^{mn} != 0 (`edges[m, n]`, [target, source]).
Each family has a docstring; `FAMILIES` maps a name to its maker, `make(name, seed)` draws one system,
`simulate(system, T, rng)` draws the data. Null systems (`NULLS`, no cross edges) add misspecifications:
coloured measurement noise, held analyser columns, an order the identification is told to under-size, drift.

Conventions: float64, explicit np.random.Generator; a system is stable with spectral radius
<= max(0.97, the self blocks' own radius + 0.005) (companion form); cross blocks are drawn at a strength the
true-model oracle detects with power well below 1 at T = 2000 and about 1 at T = 20000.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.linalg
import scipy.signal

from fedgc.core.kalman import filter_scan
from fedgc.core.local_model import LocalModel

MAX_RADIUS = 0.97
BURN_IN = 1000


@dataclass(frozen=True)
class System:
    """Ground truth.

    name: family name;  dims: (M,) latent dimension D_m of h^m;  lags: (L, D, D) A_1..A_L;
    Q: (D, D);  C: per-site (P_m, D_m);  R: per-site (P_m,) noise variances (diagonal R^m);
    edges: (M, M) bool [target, source];  noise_ar: AR(1) coefficient of the measurement noise
    (0 = white);  held: per-site {column: hold length k} (value sampled every k steps, held between);
    drift: per-site std of a slow AR(0.999) drift added to every sensor, relative to the sensor's
    signal std (0 = none);  told_dims: D_m the identification is told (None: it picks).
    """

    name: str
    dims: tuple[int, ...]
    lags: np.ndarray
    Q: np.ndarray
    C: tuple[np.ndarray, ...]
    R: tuple[np.ndarray, ...]
    edges: np.ndarray
    noise_ar: float = 0.0
    held: tuple[dict, ...] = ()
    drift: float = 0.0
    told_dims: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def M(self) -> int:
        return len(self.dims)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.dims)]).astype(int)

    def sl(self, m: int) -> slice:
        o = self.offsets
        return slice(int(o[m]), int(o[m + 1]))

    @property
    def obs_dims(self) -> tuple[int, ...]:
        return tuple(c.shape[0] for c in self.C)

    def local_model(self, m: int) -> LocalModel:
        """Site m's true local model (A_1^{mm}, C^m, Q^{mm}, diag R^m); only for one-lag systems (a latent
        VAR(2) site has no D_m-dimensional state-space model)."""
        if self.lags.shape[0] != 1:
            raise ValueError(
                f"system {self.name!r} is a latent VAR({self.lags.shape[0]}); its sites have no one-lag model"
            )
        s = self.sl(m)
        return LocalModel(A=self.lags[0][s, s].copy(), C=self.C[m].copy(), Q=self.Q[s, s].copy(), R=np.diag(self.R[m]))

    def companion(self) -> np.ndarray:
        L, D = self.lags.shape[0], self.lags.shape[1]
        top = np.hstack(list(self.lags))
        if L == 1:
            return top
        return np.vstack([top, np.hstack([np.eye(D * (L - 1)), np.zeros((D * (L - 1), D))])])


def radius(A: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(A)))) if A.size else 0.0


def companion_radius(lags: np.ndarray) -> float:
    L, D = lags.shape[0], lags.shape[1]
    top = np.hstack(list(lags))
    if L == 1:
        return radius(top)
    return radius(np.vstack([top, np.hstack([np.eye(D * (L - 1)), np.zeros((D * (L - 1), D))])]))


def _orth(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def site_dynamics(
    d: int, rng: np.random.Generator, lo: float = 0.4, hi: float = 0.9, complex_pair: bool = True
) -> np.ndarray:
    """A stable (d, d) block with eigenvalue moduli in [lo, hi]: a rotation-damped pair (if d >= 2 and
    complex_pair, angle 0.2-0.8 rad) plus real eigenvalues, in a random well-conditioned basis."""
    blocks = []
    k = 0
    if complex_pair and d >= 2 and rng.random() < 0.5:
        r, th = rng.uniform(lo, hi), rng.uniform(0.2, 0.8)
        blocks.append(r * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]))
        k = 2
    for _ in range(d - k):
        blocks.append(np.array([[rng.uniform(lo, hi) * (1 if rng.random() < 0.85 else -1)]]))
    J = scipy.linalg.block_diag(*blocks)
    # basis: orthogonal times a mild diagonal scaling (condition <= 2)
    V = _orth(d, rng) @ np.diag(rng.uniform(0.7, 1.4, d))
    return V @ J @ np.linalg.inv(V)


def cross_block(dm: int, dn: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A (dm, dn) block with spectral norm `strength`, rank min(dm, dn), entries Gaussian."""
    B = rng.standard_normal((dm, dn))
    return B * (strength / np.linalg.norm(B, 2))


def sensors(
    d: int, P: int, snr: float, rng: np.random.Generator, state_cov: np.ndarray, hetero: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """C (P, d) with Gaussian loadings, R (P,) heteroscedastic noise variances: sensor i's noise
    variance is its signal variance / snr times a factor log-uniform in [1/sqrt(hetero), sqrt(hetero)]
    (so the site's average per-sensor SNR is about snr)."""
    C = rng.standard_normal((P, d)) / np.sqrt(d)
    sig = np.einsum("pi,ij,pj->p", C, state_cov, C)
    factor = np.exp(rng.uniform(-0.5, 0.5, P) * np.log(hetero))
    R = sig / snr * factor
    return C, R


def _stationary_cov(lags: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Stationary covariance of h_t (D, D) of the latent VAR(L)."""
    L, D = lags.shape[0], lags.shape[1]
    if L == 1:
        return scipy.linalg.solve_discrete_lyapunov(lags[0], Q)
    F = np.vstack([np.hstack(list(lags)), np.hstack([np.eye(D * (L - 1)), np.zeros((D * (L - 1), D))])])
    Qc = np.zeros((D * L, D * L))
    Qc[:D, :D] = Q
    return scipy.linalg.solve_discrete_lyapunov(F, Qc)[:D, :D]


def _assemble(
    name,
    dims,
    self_blocks,
    edges_list,
    rng,
    *,
    strength=(0.2, 0.35),
    obs=None,
    snr=None,
    lags_self=None,
    Q=None,
    meta=None,
    noise_ar=0.0,
    held=(),
    drift=0.0,
    told_dims=None,
) -> System:
    """Build a System from per-site self blocks (list of (L, d, d) or (d, d)), an edge list
    [(source, target), ...] with a strength range, per-site sensor counts and SNRs (random if None)."""
    M = len(dims)
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    D = int(off[-1])
    L = max(np.asarray(b).shape[0] if np.asarray(b).ndim == 3 else 1 for b in self_blocks)
    lags = np.zeros((L, D, D))
    for m, b in enumerate(self_blocks):
        b = np.asarray(b, dtype=float)
        if b.ndim == 2:
            b = b[None]
        for lag in range(b.shape[0]):
            lags[lag, off[m] : off[m + 1], off[m] : off[m + 1]] = b[lag]
    edges = np.zeros((M, M), dtype=bool)
    cross = np.zeros_like(lags)
    for e in edges_list:
        n, m = e[0], e[1]
        lag = e[2] if len(e) > 2 else 0
        s = rng.uniform(*strength) if not np.isscalar(strength) else strength
        cross[lag, off[m] : off[m + 1], off[n] : off[n + 1]] = cross_block(dims[m], dims[n], s, rng)
        edges[m, n] = True
    # shrink the cross blocks (never the self dynamics) until stable
    scale = 1.0
    target = max(MAX_RADIUS, companion_radius(lags) + 0.005)
    while companion_radius(lags + scale * cross) > target and scale > 0.05:
        scale *= 0.95
    lags = lags + scale * cross
    if Q is None:
        Q = np.eye(D)
    Sigma = _stationary_cov(lags, Q)
    if obs is None:
        obs = [int(rng.integers(d + 1, 10 * d + 1)) for d in dims]
    if snr is None:
        snr = [float(np.exp(rng.uniform(np.log(0.5), np.log(4.0)))) for _ in dims]
    C, R = [], []
    for m in range(M):
        c, r = sensors(dims[m], obs[m], snr[m], rng, Sigma[off[m] : off[m + 1], off[m] : off[m + 1]])
        C.append(c)
        R.append(r)
    meta = dict(meta or {})
    meta.update(obs=list(obs), snr=[float(s) for s in snr], cross_scale=scale)
    return System(
        name,
        tuple(int(d) for d in dims),
        lags,
        Q,
        tuple(C),
        tuple(R),
        edges,
        noise_ar,
        tuple(held),
        drift,
        told_dims,
        meta,
    )


# ---------------------------------------------------------------------------------------------------------------
# Families inside the model class
# ---------------------------------------------------------------------------------------------------------------


def tanks(rng: np.random.Generator) -> System:
    """Line of coupled tanks (the users' case): sites A -> B -> C and an independent utility U.

    Each process site is two tanks in series (upper level u, lower level l): u_t = 0.85 u_{t-1} + inflow,
    l_t = 0.8 l_{t-1} + 0.3 u_{t-1}; A's lower-tank outflow feeds B's upper tank (A^{BA}[u, l] = 0.35),
    B's feeds C's. The utility is an independent damped oscillation. Process noise Q = diag(1, 0.3) per
    site. Sensors: A 3, B 3, C 4, U 6 (levels, outflows ~ lower level, totals; loadings jittered),
    per-sensor SNR 0.7-2 (heteroscedastic). 2 latent states each; true edges A->B, B->C only.
    """
    dims = (2, 2, 2, 2)
    tank = np.array([[0.85, 0.0], [0.3, 0.8]])
    th = 0.3
    util = 0.9 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    A = scipy.linalg.block_diag(tank, tank, tank, util)
    A[2, 1] = 0.35  # A.l -> B.u
    A[4, 3] = 0.35  # B.l -> C.u
    Q = scipy.linalg.block_diag(np.diag([1.0, 0.3]), np.diag([1.0, 0.3]), np.diag([1.0, 0.3]), np.eye(2) * 0.5)
    edges = np.zeros((4, 4), dtype=bool)
    edges[1, 0] = edges[2, 1] = True
    Sigma = scipy.linalg.solve_discrete_lyapunov(A, Q)
    base = [
        np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.7]]),
        np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]),
        np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.7], [0.5, 0.5]]),
        np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.7, -0.7], [0.3, 0.0], [0.0, 0.3]]),
    ]
    C, R = [], []
    for m, b in enumerate(base):
        c = b + 0.1 * rng.standard_normal(b.shape)
        S = Sigma[2 * m : 2 * m + 2, 2 * m : 2 * m + 2]
        sig = np.einsum("pi,ij,pj->p", c, S, c)
        snr = rng.uniform(0.7, 2.0, c.shape[0])
        C.append(c)
        R.append(sig / snr)
    return System("tanks", dims, A[None], Q, tuple(C), tuple(R), edges, meta={"obs": [3, 3, 4, 6]})


def _dims(rng, M, choices=(2, 3)):
    return tuple(int(rng.choice(choices)) for _ in range(M))


def chain(rng: np.random.Generator) -> System:
    """Cascade 0 -> 1 -> 2 -> 3 -> 4 plus an independent site 5; D_m in {2, 3}; every two-hop and
    reverse pair is a non-edge. Sensors D_m+1 .. 10 D_m, SNR 0.5-4 per site (log-uniform)."""
    M = 6
    dims = _dims(rng, M)
    blocks = [site_dynamics(d, rng) for d in dims]
    return _assemble("chain", dims, blocks, [(i, i + 1) for i in range(4)], rng)


def tree(rng: np.random.Generator) -> System:
    """Out-tree: 0 -> {1, 2}, 1 -> {3, 4}, 2 -> 5 (a root feeding two branches; siblings share a
    parent: common-cause non-edges between them; grandparent pairs are two-hop non-edges)."""
    M = 6
    dims = _dims(rng, M)
    blocks = [site_dynamics(d, rng) for d in dims]
    return _assemble("tree", dims, blocks, [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5)], rng)


def feedback(rng: np.random.Generator) -> System:
    """Feedback loop 0 -> 1 -> 2 -> 0 (recycle), with 2 -> 3 downstream and an independent site 4."""
    M = 5
    dims = _dims(rng, M)
    blocks = [site_dynamics(d, rng) for d in dims]
    return _assemble("feedback", dims, blocks, [(0, 1), (1, 2), (2, 0), (2, 3)], rng)


def dense(rng: np.random.Generator) -> System:
    """Random directed graph on 7 sites, each ordered pair an edge with probability 0.25, redrawn until
    it has at least three two-hop paths n -> k -> m with n -> m absent (the hardest non-edges)."""
    M = 7
    while True:
        E = (rng.random((M, M)) < 0.25) & ~np.eye(M, dtype=bool)  # E[m, n]: n -> m
        two = (E.astype(int) @ E.astype(int) > 0) & ~E & ~np.eye(M, dtype=bool)
        if two.sum() >= 3:
            break
    dims = _dims(rng, M)
    blocks = [site_dynamics(d, rng) for d in dims]
    el = [(n, m) for m in range(M) for n in range(M) if E[m, n]]
    return _assemble("dense", dims, blocks, el, rng, strength=(0.15, 0.3))


def var2(rng: np.random.Generator) -> System:
    """Latent VAR(2) per site (resonant second-order dynamics: h_t = A1 h_{t-1} + A2 h_{t-2} + v_t with
    complex roots of modulus 0.75-0.92), cascade 0 -> 1 -> 2 and 3 -> 2 with the cross effect at lag 2
    for one edge, site 4 independent. The snapshot state h_t is D_m-dimensional but the state-space
    order is 2 D_m: a one-lag model of the states is misspecified."""
    M = 5
    dims = _dims(rng, M)
    blocks = []
    for d in dims:
        r = rng.uniform(0.75, 0.92, d)
        th = rng.uniform(0.3, 1.2, d)
        V = _orth(d, rng)
        A1 = V @ np.diag(2 * r * np.cos(th)) @ V.T
        A2 = V @ np.diag(-(r**2)) @ V.T
        blocks.append(np.stack([A1, A2]))
    return _assemble("var2", dims, blocks, [(0, 1, 0), (1, 2, 1), (3, 2, 0)], rng, strength=(0.2, 0.3))


def mixed(rng: np.random.Generator) -> System:
    """Mixed orders: sites 0, 2, 4 have resonant latent VAR(2) dynamics (as in `var2`), sites 1, 3, 5 are
    VAR(1); chain 0 -> 1 -> 2 -> 3, 4 -> 3, a lag-2 cross effect 2 -> 3, site 5 independent."""
    M = 6
    dims = _dims(rng, M)
    blocks = []
    for m, d in enumerate(dims):
        if m % 2 == 0:
            r = rng.uniform(0.75, 0.92, d)
            th = rng.uniform(0.3, 1.2, d)
            V = _orth(d, rng)
            blocks.append(np.stack([V @ np.diag(2 * r * np.cos(th)) @ V.T, V @ np.diag(-(r**2)) @ V.T]))
        else:
            blocks.append(np.stack([site_dynamics(d, rng), np.zeros((d, d))]))
    return _assemble("mixed", dims, blocks, [(0, 1, 0), (1, 2, 0), (2, 3, 1), (4, 3, 0)], rng, strength=(0.2, 0.3))


def slow(rng: np.random.Generator) -> System:
    """Slow states: self eigenvalues 0.93-0.98 (long memory, near-integrating levels), chain
    0 -> 1 -> 2 and 0 -> 3, independent site 4; weaker cross blocks (0.06-0.12) as the states are large."""
    M = 5
    dims = _dims(rng, M)
    blocks = [site_dynamics(d, rng, lo=0.93, hi=0.98, complex_pair=False) for d in dims]
    return _assemble("slow", dims, blocks, [(0, 1), (1, 2), (0, 3)], rng, strength=(0.06, 0.12))


FAMILIES: dict[str, Callable[[np.random.Generator], System]] = {
    "tanks": tanks,
    "chain": chain,
    "tree": tree,
    "feedback": feedback,
    "dense": dense,
    "var2": var2,
    "mixed": mixed,
    "slow": slow,
}


# ---------------------------------------------------------------------------------------------------------------
# Null systems (no cross edges) under misspecification
# ---------------------------------------------------------------------------------------------------------------


def _null_base(rng: np.random.Generator, name: str, dims=None, **kw) -> System:
    M = 4
    dims = dims or _dims(rng, M)
    blocks = [site_dynamics(d, rng) for d in dims]
    obs = [int(rng.integers(d + 2, 6 * d + 1)) for d in dims]
    return _assemble(name, dims, blocks, [], rng, obs=obs, **kw)


def null_control(rng):
    """Well-specified control: 4 independent sites, D_m in {2, 3}, sensors D_m+2 .. 6 D_m, SNR 0.5-4."""
    return _null_base(rng, "null_control")


def null_coloured(rng):
    """Coloured measurement noise: w_t = 0.5 w_{t-1} + e_t per sensor (stationary variance as R)."""
    return _null_base(rng, "null_coloured", noise_ar=0.5)


def null_held(rng):
    """Held analyser columns: in every site half the sensors (at least one) are sampled every k steps
    (k 3..15 per column, random phase) and held in between, like TEP's analysers."""
    s = _null_base(rng, "null_held")
    held = []
    for P in s.obs_dims:
        cols = rng.choice(P, size=max(1, P // 2), replace=False)
        held.append({int(c): int(rng.integers(3, 16)) for c in cols})
    return replace(s, held=tuple(held))


def null_underorder(rng):
    """Under-specified local order: each site has 4 latent states (time scales 0.3-0.95, one resonant
    pair), sensors 8-16; identification is told D_m = 2."""
    M = 4
    dims = (4,) * M
    blocks = [site_dynamics(4, rng, lo=0.3, hi=0.95) for _ in dims]
    obs = [int(rng.integers(8, 17)) for _ in dims]
    return _assemble("null_underorder", dims, blocks, [], rng, obs=obs, told_dims=(2,) * M)


def null_drift(rng):
    """Slow drift: every sensor gets an AR(0.999) drift (independent across sensors and sites) whose
    stationary std is 0.5 x the sensor's signal std."""
    return _null_base(rng, "null_drift", drift=0.5)


NULLS: dict[str, Callable[[np.random.Generator], System]] = {
    "control": null_control,
    "coloured": null_coloured,
    "held": null_held,
    "underorder": null_underorder,
    "drift": null_drift,
}


def make(name: str, seed: int) -> System:
    """System `name` (a family or 'null_<kind>') drawn with np.random.default_rng([seed, hash])."""
    key = sum(ord(c) * (i + 1) for i, c in enumerate(name))
    rng = np.random.default_rng([seed, key])
    if name.startswith("null_"):
        return NULLS[name[5:]](rng)
    return FAMILIES[name](rng)


# ---------------------------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------------------------


def _ar1_filter(e: np.ndarray, phi: float) -> np.ndarray:
    return scipy.signal.lfilter([1.0], [1.0, -phi], e, axis=0)


def simulate(system: System, T: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-site measurements y^m (T, P_m) and the true latent states (T, D), after a burn-in."""
    L, D = system.lags.shape[0], system.lags.shape[1]
    F = system.companion()
    n = T + BURN_IN
    v = rng.standard_normal((n, D)) @ np.linalg.cholesky(system.Q).T
    drive = np.zeros((n, D * L))
    drive[:, :D] = v
    H = filter_scan(F, drive)[BURN_IN:, :D]
    ys = []
    for m in range(system.M):
        C, R = system.C[m], system.R[m]
        P = C.shape[0]
        sig = H[:, system.sl(m)] @ C.T
        e = rng.standard_normal((n, P))
        if system.noise_ar:
            e = _ar1_filter(e, system.noise_ar) * np.sqrt(1 - system.noise_ar**2)
        w = e[BURN_IN:] * np.sqrt(R)
        y = sig + w
        if system.drift:
            sd = np.sqrt(np.einsum("pi,ij,pj->p", C, np.cov(H[:, system.sl(m)].T).reshape(C.shape[1], -1), C))
            d = _ar1_filter(rng.standard_normal((n, P)), 0.999) * np.sqrt(1 - 0.999**2)
            y = y + d[BURN_IN:] * sd * system.drift
        if system.held:
            for col, k in system.held[m].items():
                phase = int(rng.integers(k))
                idx = np.arange(T)
                src = np.maximum(((idx - phase) // k) * k + phase, 0)
                y[:, col] = y[src, col]
        ys.append(np.ascontiguousarray(y))
    return ys, H
