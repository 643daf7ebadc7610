"""A client's local linear state-space model: given, loaded from .npz, or identified from data.

    h_t = A h_{t-1} + v_t,   v_t ~ N(0, Q)          (state, D dims)
    y_t = C h_t + w_t,       w_t ~ N(0, R)          (measurements, P dims)

Measurements are modelled after standardisation: y_t = (raw_t - mean) / scale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg

from fedgc.core.kalman import SteadyState, information_matrix, steady_state
from fedgc.core.moments import (
    ColumnMoments,
    StandardisedRows,
    column_moments,
    column_span,
    scores_and_residual_variance,
    standardised_gram,
)
from fedgc.errors import ModelError
from fedgc.files import ctrl_c_deferred, replacing


@dataclass(frozen=True)
class LocalModel:
    """Client m's model (A^{mm}, C^m, Q^m, R^m) and its standardisation.

    A: (D, D) stable;  C: (P, D);  Q: (D, D) SPD;  R: (P, P) SPD;
    mean, scale: (P,) so that y = (raw - mean) / scale;
    columns: (P,) the sensor names the model is of, in order (None: unnamed; the data's columns as they come).
    """

    A: np.ndarray
    C: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    mean: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None: zeros, set in __post_init__
    scale: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None: ones
    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        P = self.C.shape[0]
        if self.mean is None:
            object.__setattr__(self, "mean", np.zeros(P))
        if self.scale is None:
            object.__setattr__(self, "scale", np.ones(P))

    @property
    def state_dim(self) -> int:
        return self.A.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.C.shape[0]

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.mean) / self.scale


def validate(model: LocalModel, client: str) -> SteadyState:
    """Check shapes, stability, detectability and positive definiteness; return the steady state.

    Raises ModelError naming the client and the problem.
    """
    A, C, Q, R = (np.asarray(x, dtype=float) for x in (model.A, model.C, model.Q, model.R))
    D = A.shape[0] if A.ndim == 2 else -1
    if A.ndim != 2 or A.shape != (D, D):
        raise ModelError(f"client '{client}': A must be square, got shape {A.shape}")
    if C.ndim != 2 or C.shape[1] != D:
        raise ModelError(f"client '{client}': C must be (P, {D}), got shape {C.shape}")
    P = C.shape[0]
    if Q.shape != (D, D):
        raise ModelError(f"client '{client}': Q must be ({D}, {D}), got shape {Q.shape}")
    if R.shape != (P, P):
        raise ModelError(f"client '{client}': R must be ({P}, {P}), got shape {R.shape}")
    if model.mean.shape != (P,) or model.scale.shape != (P,):
        raise ModelError(f"client '{client}': mean and scale must have shape ({P},)")
    if model.columns is not None and (len(model.columns) != P or len(set(model.columns)) != P):
        raise ModelError(
            f"client '{client}': the model must name its {P} sensor columns once each, got {len(model.columns)}"
        )
    for name, X in (("A", A), ("C", C), ("Q", Q), ("R", R), ("mean", model.mean), ("scale", model.scale)):
        if not np.all(np.isfinite(X)):
            raise ModelError(f"client '{client}': {name} has non-finite entries")
    if np.any(model.scale <= 0):
        raise ModelError(f"client '{client}': scale must be positive")
    rho = np.max(np.abs(np.linalg.eigvals(A))) if D else 0.0
    if rho >= 1.0:
        raise ModelError(f"client '{client}': local A is not stable (spectral radius {rho:.4f} >= 1)")
    _require_spd(Q, "Q", client)
    _require_spd(R, "R", client)
    if not is_detectable(A, C):
        raise ModelError(f"client '{client}': (A, C) is not detectable")
    return steady_state(A, information_matrix(C, R), Q)


def is_detectable(A: np.ndarray, C: np.ndarray, tol: float = 1e-9) -> bool:
    """PBH test: rank [A - lambda I; C] = D for every eigenvalue with |lambda| >= 1."""
    D = A.shape[0]
    for lam in np.linalg.eigvals(A):
        if abs(lam) >= 1.0 - tol:
            M = np.vstack([A - lam * np.eye(D), C])
            if np.linalg.matrix_rank(M, tol=tol * max(1.0, np.abs(M).max())) < D:
                return False
    return True


def _require_spd(X: np.ndarray, name: str, client: str) -> None:
    if not np.allclose(X, X.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(X).max())):
        raise ModelError(f"client '{client}': {name} is not symmetric")
    wmin = np.linalg.eigvalsh(0.5 * (X + X.T)).min()
    if wmin <= 0:
        raise ModelError(f"client '{client}': {name} is not positive definite (smallest eigenvalue {wmin:.3g})")


# The model file's array naming the sha256 of the data it was identified on (fedgc identify).
PROVENANCE = "identified_on_sha256"


def load_npz(path: str | Path, client: str) -> LocalModel:
    """Load a given model from an .npz with arrays A, C, Q, R (and optionally mean, scale, columns)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"client '{client}': model file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k], dtype=str if k in ("columns", PROVENANCE) else float) for k in f.files}
    except Exception as exc:  # corrupt zip, pickled object arrays, ...
        raise ModelError(f"client '{client}': cannot read model file {path}: {exc}") from exc
    missing = [k for k in ("A", "C", "Q", "R") if k not in arrays]
    if missing:
        raise ModelError(f"client '{client}': model file {path} lacks arrays {missing}")
    arrays.pop(PROVENANCE, None)
    unknown = sorted(set(arrays) - {"A", "C", "Q", "R", "mean", "scale", "columns"})
    if unknown:
        raise ModelError(f"client '{client}': model file {path} has unknown arrays {unknown}")
    columns = arrays.pop("columns", None)
    model = LocalModel(**arrays, columns=None if columns is None else tuple(str(c) for c in columns.reshape(-1)))
    validate(model, client)
    return model


def save_npz(path: str | Path, model: LocalModel, *, identified_on: str | None = None) -> None:
    """The model as .npz: arrays A, C, Q, R, mean, scale, and its column names when it has them.
    identified_on: the sha256 of the data file it was identified on (its provenance, model_provenance)."""
    arrays: dict[str, np.ndarray] = {
        "A": model.A, "C": model.C, "Q": model.Q, "R": model.R, "mean": model.mean, "scale": model.scale,
    }  # fmt: skip
    if model.columns is not None:
        arrays["columns"] = np.asarray(model.columns, dtype=str)
    if identified_on is not None:
        arrays[PROVENANCE] = np.asarray(identified_on, dtype=str)
    path = Path(path) if str(path).endswith(".npz") else Path(f"{path}.npz")  # as np.savez names it
    with ctrl_c_deferred(), replacing(path) as tmp, open(tmp, "wb") as f:  # np.savez's zip must not be cut short
        np.savez(f, **arrays)  # type: ignore[arg-type]


def model_provenance(path: str | Path) -> str | None:
    """The sha256 of the data file a model file was identified on (save_npz's identified_on); None when
    the file does not say (a model made elsewhere)."""
    with np.load(path, allow_pickle=False) as f:
        return str(f[PROVENANCE]) if PROVENANCE in f.files else None


# Rows above which parallel analysis runs on a random subsample of this many rows (choose_state_dim).
PARALLEL_ANALYSIS_MAX_ROWS = 20_000
# Draws of the Gaussian null of parallel analysis (gaussian_null_quantile), once per table shape.
GAUSSIAN_NULL_DRAWS = 200


def choose_state_dim(
    y: np.ndarray,
    eigenvalues: np.ndarray,
    *,
    explained_variance: float | None = None,
    rng: np.random.Generator | None = None,
    n_permutations: int = 20,
    quantile: float = 0.95,
) -> int:
    """Number of latent states for standardised data y (T, P) with covariance eigenvalues (descending).

    With explained_variance given: the smallest D reaching that fraction of the variance.
    Otherwise Horn's parallel analysis: keep the leading components whose eigenvalue exceeds the
    `quantile` of the same-rank eigenvalue of data with no cross-sensor structure. For a complete table
    of more rows than columns that null is the correlation matrix of T rows of P independent Gaussian
    columns (gaussian_null_quantile, a function of (T, P) alone); with missing values or T <= P, the second
    moments of y with each column permuted independently in time (permutation_null: the missing pattern of
    every pair is kept), `n_permutations` times.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=float))[::-1]
    T, P = y.shape
    if explained_variance is not None:
        frac = np.cumsum(lam) / lam.sum()
        return int(min(P - 1, np.searchsorted(frac, explained_variance) + 1))
    rng = np.random.default_rng(0) if rng is None else rng
    if T > PARALLEL_ANALYSIS_MAX_ROWS:
        # Long windows: the whole analysis (data eigenvalues and their null) on a random subset of rows. The
        # test's power grows with T; the subsample's null is a little wider (bulk edge (1 + sqrt(P / n))^2), so
        # a component must stand out of n = 20,000 rows, not of a year of 1-minute data.
        rows = np.sort(rng.choice(T, PARALLEL_ANALYSIS_MAX_ROWS, replace=False))
        y = y[rows]
        lam = np.sort(np.linalg.eigvalsh(second_moments(y)))[::-1]
    if y.shape[0] > P and np.isfinite(y).all():  # Bartlett's chi(T - 1 - i) needs T > P
        threshold = gaussian_null_quantile(y.shape[0], P, quantile)
    else:
        threshold = np.quantile(permutation_null(y, rng=rng, n_permutations=n_permutations), quantile, axis=0)
    above = lam > threshold
    d = int(np.argmin(above)) if not above.all() else P
    return min(max(d, 1), P - 1)


@functools.lru_cache(maxsize=32)
def gaussian_null_quantile(T: int, P: int, quantile: float) -> np.ndarray:
    """(P,) read-only: the `quantile` of each rank's eigenvalue (descending) of the sample correlation matrix of
    T rows of P independent Gaussian columns, over GAUSSIAN_NULL_DRAWS draws of a Generator seeded by (T, P).

    This is the permutation null of a complete standardised table (each column permuted independently in
    time) up to terms of higher order in 1/T: a permuted pair's correlation has mean 0 and variance 1/(T - 1)
    whatever the columns' marginal distributions, and so has a Gaussian pair's. It costs O(P^3) a draw
    (Bartlett: W = B B^T ~ Wishart(T - 1, I) with B lower triangular, chi(T - 1 - i) on its diagonal and
    N(0, 1) below), not the O(T P) random draws of a permutation, and depends on the shape alone, so a
    run's clients of one shape share it, and a client's state dimension does not depend on its seed."""
    rng = np.random.default_rng([T, P])
    null = np.empty((GAUSSIAN_NULL_DRAWS, P))
    rank = np.arange(P)
    for a in range(0, GAUSSIAN_NULL_DRAWS, 50):  # bounded temporaries for wide tables
        n = min(50, GAUSSIAN_NULL_DRAWS - a)
        B = np.tril(rng.standard_normal((n, P, P)), -1)
        B[:, rank, rank] = np.sqrt(rng.chisquare(T - 1 - rank, size=(n, P)))
        W = B @ B.transpose(0, 2, 1)
        d = 1.0 / np.sqrt(np.einsum("nii->ni", W))
        null[a : a + n] = np.linalg.eigvalsh(W * d[:, :, None] * d[:, None, :])[:, ::-1]
    threshold = np.quantile(null, quantile, axis=0)
    threshold.flags.writeable = False
    return threshold


def permutation_null(y: np.ndarray, *, rng: np.random.Generator, n_permutations: int) -> np.ndarray:
    """(n_permutations, P) eigenvalues (descending) of the second moments of y (T, P) with each column
    permuted independently in time, permutation after permutation.

    rng.permuted shuffles each row of the (P, T) columns as rng.permutation(T) would, column after column:
    the permutations of a gather y[rng.permutation(T), j] per column, without P index arrays. The shuffles
    (the random draws) are most of the cost; the data's finiteness is checked once (a permutation keeps it),
    and the eigenvalues of all n_permutations matrices come from one batched call."""
    T, P = y.shape
    columns, shuffled = np.ascontiguousarray(y.T), np.empty((P, T))
    complete = bool(np.isfinite(columns).all())
    grams = np.empty((n_permutations, P, P))
    for i in range(n_permutations):
        rng.permuted(columns, axis=1, out=shuffled)
        grams[i] = shuffled @ shuffled.T / T if complete else second_moments(shuffled.T)
    return np.linalg.eigvalsh(grams)[:, ::-1]


def identify(
    raw: np.ndarray,
    *,
    client: str,
    state_dim: int | None = None,
    explained_variance: float | None = None,
    min_variance: float = 1e-6,
    rng: np.random.Generator | None = None,
) -> LocalModel:
    """Identify (A, C, Q, R) from a client's own data (T, P): standardise, PCA, least squares.

    C: the top-D principal directions scaled so the scores have unit variance;
    scores s_t = C^+ y_t; A: least squares s_t ~ A s_{t-1}; Q: residual
    covariance of that fit, corrected for the measurement noise in the scores;
    R: diagonal residual variances of y_t - C s_t, floored at min_variance.

    Missing values (NaN) are tolerated: mean and scale from each column's observed
    values, the PCA on pairwise-complete second moments (each entry averaged over
    the rows where both sensors are observed: unbiased when values are missing at
    random, unlike mean imputation, which shrinks every covariance by the missing
    fraction), scores by least squares on each row's observed sensors (rows that
    observe fewer than D independent directions have none), A and Q from the
    pairs of consecutive rows with scores, each row's score noise from its own
    observed pattern.
    """
    raw = np.asarray(raw, dtype=float)
    T, P = raw.shape
    if T >= LONG_ROWS:
        moments = column_moments(raw)
        if moments.complete:
            return _identify_long(raw, moments, client=client, state_dim=state_dim,
                                  explained_variance=explained_variance, min_variance=min_variance, rng=rng)  # fmt: skip
    observed = np.isfinite(raw)
    gappy = not observed.all()
    if gappy and (observed.sum(axis=0) < 2).any():
        bad = np.flatnonzero(observed.sum(axis=0) < 2).tolist()
        raise ModelError(f"client '{client}': columns {bad} have fewer than 2 observed values")
    mean = np.nanmean(raw, axis=0) if gappy else raw.mean(axis=0)
    scale = np.nanstd(raw, axis=0) if gappy else raw.std(axis=0)
    span = column_span(raw, complete=not gappy)
    _refuse_constant(span, mean, scale, client)
    y = (raw - mean) / scale
    lam, U = _principal_axes(second_moments(y))
    if state_dim is None:
        state_dim = choose_state_dim(y, lam, explained_variance=explained_variance, rng=rng)
    D = _checked_dim(state_dim, T, P, client)
    if gappy:  # pairwise moments need not be positive semi-definite
        lam = np.clip(lam, 0.0, None)
    C = _loadings(lam, U, D)
    if gappy:
        return _identify_gappy(y, C, mean, scale, client=client, min_variance=min_variance)
    scores = y @ np.linalg.pinv(C).T  # (T, D) least squares, as _identify_long (lstsq's T right-hand sides cost 20x)
    resid_y = y - scores @ C.T
    R = np.diag(np.maximum(resid_y.var(axis=0), min_variance))
    return _fit_scores(scores, C, R, mean, scale, client)


# Rows from which a complete table is identified from moments accumulated over blocks of rows
# (fedgc.core.moments), never forming the standardised (T, P) table or its residual.
LONG_ROWS = 1 << 15


def _identify_long(
    raw: np.ndarray, moments: ColumnMoments, *, client: str, state_dim: int | None, explained_variance: float | None,
    min_variance: float, rng: np.random.Generator | None,
) -> LocalModel:  # fmt: skip
    """`identify` of a long complete table: the same estimates, from block-wise sums."""
    T, P = raw.shape
    mean, scale, span = moments.mean, moments.std, moments.span
    if mean is None or scale is None or span is None:
        raise ValueError("_identify_long needs the moments of a complete table")
    _refuse_constant(span, mean, scale, client)
    lam, U = _principal_axes(standardised_gram(raw, mean, scale))
    if state_dim is None:
        y = StandardisedRows(raw, mean, scale)  # parallel analysis reads a subsample of its rows
        if T <= PARALLEL_ANALYSIS_MAX_ROWS:  # (or all of them)
            y = y[np.arange(T)]  # type: ignore[assignment]
        state_dim = choose_state_dim(y, lam, explained_variance=explained_variance, rng=rng)  # type: ignore[arg-type]
    D = _checked_dim(state_dim, T, P, client)
    C = _loadings(lam, U, D)
    scores, resid_var = scores_and_residual_variance(raw, mean, scale, C)
    return _fit_scores(scores, C, np.diag(np.maximum(resid_var, min_variance)), mean, scale, client)


def _refuse_constant(span: np.ndarray, mean: np.ndarray, scale: np.ndarray, client: str) -> None:
    # A constant column has std ~1e-16 |mean| from rounding, not exactly 0.
    constant = (span == 0) | (scale <= 1e-12 * np.maximum(np.abs(mean), np.finfo(float).tiny))
    if np.any(constant):
        bad = np.flatnonzero(constant).tolist()
        raise ModelError(f"client '{client}': columns {bad} are constant, cannot standardise")


def _principal_axes(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors of a (P, P) second-moment matrix."""
    lam, U = np.linalg.eigh(cov)
    order = np.argsort(lam)[::-1]
    return lam[order], U[:, order]


def _checked_dim(state_dim: int, T: int, P: int, client: str) -> int:
    D = int(state_dim)
    if not 1 <= D < P:
        raise ModelError(f"client '{client}': state dimension {D} must lie in [1, {P - 1}] for {P} sensors")
    if T < 3 * D + 2:
        raise ModelError(f"client '{client}': {T} rows are too few to identify a {D}-state model")
    return D


def _loadings(lam: np.ndarray, U: np.ndarray, D: int) -> np.ndarray:
    """Probabilistic PCA: C = U_D (Lambda_D - s2 I)^{1/2}, scores with (approximately) unit variance."""
    noise_var = float(lam[D:].mean())
    signal = np.clip(lam[:D] - noise_var, 1e-3 * lam[:D], None)
    return U[:, :D] * np.sqrt(signal)


def _fit_scores(
    scores: np.ndarray, C: np.ndarray, R: np.ndarray, mean: np.ndarray, scale: np.ndarray, client: str
) -> LocalModel:
    """A and Q from complete scores (T, D)."""
    X, Y = scores[:-1], scores[1:]
    # The scores carry white measurement noise N = C^+ R C^+^T: E[X^T X] = n (Sigma_s + N) while
    # E[Y^T X] = n A Sigma_s, so plain least squares shrinks A towards 0. Remove N from the Gram matrix.
    Cp = np.linalg.pinv(C)
    noise_in_scores = Cp @ R @ Cp.T
    return _fit_dynamics(X, Y, len(X) * noise_in_scores, noise_in_scores, noise_in_scores, C, R, mean, scale, client)


def second_moments(y: np.ndarray) -> np.ndarray:
    """(P, P) second moments of standardised data y (T, P): y^T y / T, or with NaN for missing values
    the pairwise-complete average over the rows where both sensors are observed (0 where none is)."""
    observed = np.isfinite(y)
    if observed.all():
        return y.T @ y / y.shape[0]
    y0 = np.where(observed, y, 0.0)
    n = observed.T.astype(float) @ observed.astype(float)
    return np.divide(y0.T @ y0, n, out=np.zeros((y.shape[1], y.shape[1])), where=n > 0)


def _identify_gappy(
    y: np.ndarray, C: np.ndarray, mean: np.ndarray, scale: np.ndarray, *, client: str, min_variance: float
) -> LocalModel:
    """The rest of `identify` for data with missing values: per-pattern scores and score noise."""
    T, D = y.shape[0], C.shape[1]
    observed = np.isfinite(y)
    patterns, which = np.unique(observed, axis=0, return_inverse=True)
    which = which.reshape(-1)
    scores = np.full((T, D), np.nan)
    pinvs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k, pattern in enumerate(patterns):
        obs = np.flatnonzero(pattern)
        Co = C[obs]
        if obs.size < D or np.linalg.matrix_rank(Co) < D:
            continue
        Cp = np.linalg.pinv(Co)
        pinvs[k] = (obs, Cp)
        rows = np.flatnonzero(which == k)
        scores[rows] = y[np.ix_(rows, obs)] @ Cp.T
    resid_y = y - scores @ C.T  # NaN where the sensor or the row's scores are missing
    counts = np.isfinite(resid_y).sum(axis=0)
    if (counts < 2).any():
        raise ModelError(
            f"client '{client}': too few rows with scores to estimate the noise of columns "
            f"{np.flatnonzero(counts < 2).tolist()}"
        )
    R = np.diag(np.maximum(np.nanvar(resid_y, axis=0), min_variance))
    noise = np.zeros((len(patterns), D, D))  # per pattern: C_o^+ R_oo C_o^+^T
    for k, (obs, Cp) in pinvs.items():
        noise[k] = Cp @ R[np.ix_(obs, obs)] @ Cp.T
    pairs = np.flatnonzero(np.isfinite(scores[:-1, 0]) & np.isfinite(scores[1:, 0]))
    if pairs.size < 3 * D + 2:
        raise ModelError(
            f"client '{client}': only {pairs.size} pairs of consecutive rows have enough observed "
            f"sensors, too few to identify a {D}-state model"
        )
    X, Y = scores[pairs], scores[pairs + 1]
    noise_X = noise[which[pairs]]
    noise_Y = noise[which[pairs + 1]]
    return _fit_dynamics(
        X, Y, noise_X.sum(axis=0), noise_X.mean(axis=0), noise_Y.mean(axis=0), C, R, mean, scale, client
    )


MAX_NOISE_CORRECTION = 0.75  # the share of the raw AR residual covariance the correction may remove


def corrected_process_noise(raw: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Q from the scores' AR residual covariance `raw` (D, D) and the part `noise` (D, D) the
    scores' measurement noise puts into it: raw - c * noise, with the largest c <= 1 that keeps
    Q >= (1 - MAX_NOISE_CORRECTION) * raw (Loewner order).

    With a well-specified model E[raw] = Q + noise and c = 1. On real plants the PCA residual
    R also holds unmodelled, autocorrelated signal, so `noise` can exceed `raw` in some
    direction; raw - noise is then indefinite, and clipping it leaves near-deterministic state
    directions whose steady-state gain is about 0, and the augmented filters diverge. raw - c
    noise >= (1 - g) raw holds exactly when c <= g mu, mu the smallest generalised eigenvalue of
    (raw, noise).
    """
    raw, noise = 0.5 * (raw + raw.T), 0.5 * (noise + noise.T)
    scale = max(np.linalg.eigvalsh(raw).max(), 1e-6)
    mu = scipy.linalg.eigh(raw, noise + 1e-12 * scale * np.eye(len(noise)), eigvals_only=True)[0]
    Q = raw - min(1.0, MAX_NOISE_CORRECTION * max(mu, 0.0)) * noise
    w, V = np.linalg.eigh(Q)  # raw itself can be singular (fewer score pairs than states)
    return (V * np.maximum(w, 1e-3 * scale)) @ V.T


def _fit_dynamics(
    X: np.ndarray, Y: np.ndarray, gram_noise: np.ndarray, noise_X: np.ndarray, noise_Y: np.ndarray, C: np.ndarray,
    R: np.ndarray, mean: np.ndarray, scale: np.ndarray, client: str,
) -> LocalModel:  # fmt: skip
    """A, Q from the score pairs X = s_{t-1}, Y = s_t (n, D) whose measurement noise has sum gram_noise
    over the rows of X and average covariance noise_X (rows of X) and noise_Y (rows of Y)."""
    gram = X.T @ X - gram_noise
    if np.linalg.eigvalsh(0.5 * (gram + gram.T)).min() > 0.1 * np.linalg.eigvalsh(X.T @ X).min():
        A = np.linalg.solve(gram, X.T @ Y).T
    else:
        A = np.linalg.lstsq(X, Y, rcond=None)[0].T
    rho = np.max(np.abs(np.linalg.eigvals(A)))
    if rho >= 0.999:
        A = A * (0.999 / rho)
    resid_s = Y - X @ A.T
    Q = corrected_process_noise(resid_s.T @ resid_s / len(resid_s), noise_Y + A @ noise_X @ A.T)
    model = LocalModel(A=A, C=C, Q=Q, R=R, mean=mean, scale=scale)
    validate(model, client)
    return model
