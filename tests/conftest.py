"""Shared generators for the maths test suite.

Everything is float64 and seeded through explicit ``np.random.default_rng(seed)``
generators; nothing touches global random state. Systems are kept small so the
suite stays fast.

The helpers are exposed as fixtures (``gen``) rather than imported from this
module, so the suite works under any pytest import mode.
"""

from __future__ import annotations

import os
import signal

# Tiny matrices: multi-threaded BLAS / torch only adds wake-up latency (tens of ms per call on a
# loaded 2-core machine). Respect an explicit user setting.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from collections.abc import Sequence
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

try:  # fedgc.core.theta (clients that learn f_theta) uses torch; its default thread pool costs ~20 ms per tiny matmul here.
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


# ----------------------------------------------------------------------------- random matrices


def random_stable(D: int, rng: np.random.Generator, radius: float = 0.9) -> np.ndarray:
    """A dense (generally non-symmetric, complex-eigenvalued) matrix with spectral radius `radius`."""
    X = rng.standard_normal((D, D))
    return X * (radius / np.max(np.abs(np.linalg.eigvals(X))))


def random_spd(D: int, rng: np.random.Generator, lo: float = 0.5, hi: float = 2.0) -> np.ndarray:
    """A symmetric positive definite matrix with eigenvalues drawn in [lo, hi]."""
    U, _ = np.linalg.qr(rng.standard_normal((D, D)))
    return (U * rng.uniform(lo, hi, D)) @ U.T


class LGSS(NamedTuple):
    """Linear Gaussian state space: h_t = A h_{t-1} + u_t + v_t, y_t = C h_t + w_t."""

    A: np.ndarray  # (D, D)
    C: np.ndarray  # (P, D)
    Q: np.ndarray  # (D, D)
    R: np.ndarray  # (P, P), dense (not diagonal) on purpose


def random_lgss(rng: np.random.Generator, D: int = 3, P: int = 6, radius: float = 0.9, r_scale: float = 1.0) -> LGSS:
    return LGSS(
        A=random_stable(D, rng, radius),
        C=rng.standard_normal((P, D)),
        Q=random_spd(D, rng),
        R=r_scale * random_spd(P, rng),
    )


def simulate_lgss(
    sys: LGSS, T: int, rng: np.random.Generator, inputs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """States (T, D) and measurements (T, P) from h_0 = 0."""
    D, P = sys.A.shape[0], sys.C.shape[0]
    u = np.zeros((T, D)) if inputs is None else inputs
    Lq, Lr = np.linalg.cholesky(sys.Q), np.linalg.cholesky(sys.R)
    h = np.zeros(D)
    H, Y = np.empty((T, D)), np.empty((T, P))
    for t in range(T):
        h = sys.A @ h + u[t] + Lq @ rng.standard_normal(D)
        H[t] = h
        Y[t] = sys.C @ h + Lr @ rng.standard_normal(P)
    return H, Y


def textbook_filter(
    sys: LGSS, y: np.ndarray, u: np.ndarray, h0: np.ndarray, P1: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Naive covariance-form Kalman filter, one step at a time.

    predict: m = A h_{t-1} + u_t, P = A Sigma_{t-1} A^T + Q (P = P1 at t = 1)
    update:  K = P C^T (C P C^T + R)^{-1}, h_t = m + K (y_t - C m), Sigma_t = (I - K C) P
    Returns posterior means (T, D) and the gains K_t.
    """
    A, C, Q, R = sys
    D = A.shape[0]
    h, P = np.asarray(h0, dtype=float), P1
    out, gains = np.empty((len(y), D)), []
    for t in range(len(y)):
        m = A @ h + u[t]
        K = P @ C.T @ np.linalg.inv(C @ P @ C.T + R)
        h = m + K @ (y[t] - C @ m)
        Sigma = (np.eye(D) - K @ C) @ P
        P = A @ Sigma @ A.T + Q  # prior covariance of the next step
        out[t] = h
        gains.append(K)
    return out, gains


def loop_scan(F: np.ndarray, drive: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """Reference h_t = F h_{t-1} + drive_t, (T, D)."""
    out = np.empty_like(drive)
    h = np.asarray(h0, dtype=float)
    for t in range(len(drive)):
        h = F @ h + drive[t]
        out[t] = h
    return out


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


# ----------------------------------------------------------------------------- statistics


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney rank formula (ties get average ranks)."""
    scores = np.asarray(scores, dtype=float).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes")
    ranks = scipy.stats.rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def benjamini_hochberg(p: np.ndarray, alpha: float) -> np.ndarray:
    """Step-up BH: reject the k smallest p-values, k the largest with p_(k) <= k alpha / m."""
    p = np.asarray(p, dtype=float)
    m = p.size
    order = np.argsort(p)
    below = p[order] <= alpha * np.arange(1, m + 1) / m
    reject = np.zeros(m, dtype=bool)
    if below.any():
        k = int(np.max(np.flatnonzero(below))) + 1
        reject[order[:k]] = True
    return reject


def off_diagonal(M: int) -> np.ndarray:
    return ~np.eye(M, dtype=bool)


def off_block_mask(dims: Sequence[int]) -> np.ndarray:
    """(D, D) True outside the diagonal blocks."""
    o = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    mask = np.ones((o[-1], o[-1]), dtype=bool)
    for m in range(len(dims)):
        mask[o[m] : o[m + 1], o[m] : o[m + 1]] = False
    return mask


# ----------------------------------------------------------------------------- federated runs


def sessions_for(data, models=None, **kw):
    """ClientSession objects for synthetic data, with the true local models unless given."""
    from fedgc.protocol.session import ClientSession

    M = len(data.y)
    models = [data.system.local_model(m) for m in range(M)] if models is None else models
    return [ClientSession(f"c{m}", models[m], data.y[m], **kw) for m in range(M)]


def run_federated(data, config, models=None, **kw):
    from fedgc.protocol.loop import run_protocol
    from fedgc.protocol.transport import LocalTransport

    sessions = sessions_for(data, models)
    return run_protocol(LocalTransport(sessions), config, **kw), sessions


@pytest.fixture(scope="session")
def gen() -> SimpleNamespace:
    """The helpers above, as one namespace."""
    return SimpleNamespace(
        random_stable=random_stable,
        random_spd=random_spd,
        random_lgss=random_lgss,
        simulate_lgss=simulate_lgss,
        textbook_filter=textbook_filter,
        loop_scan=loop_scan,
        rel_err=rel_err,
        auroc=auroc,
        benjamini_hochberg=benjamini_hochberg,
        off_diagonal=off_diagonal,
        off_block_mask=off_block_mask,
        sessions_for=sessions_for,
        run_federated=run_federated,
        LGSS=LGSS,
    )


# ----------------------------------------------------------------------------- headless Chromium


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
)  # fmt: skip


def start_chromium():
    """Debian's headless Chromium through Selenium and Debian's chromedriver, with a fresh profile and the
    browser console log kept (driver.get_log("browser")). Fails, never skips, when either is missing."""
    import shutil
    import tempfile
    from pathlib import Path

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"the browser tests need Debian's Chromium: {missing} missing "
                    "(apt-get install -y chromium chromium-driver; .ci/run does it)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fedgc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.fedgc_profile = profile
    driver.fedgc_cleanup = lambda: shutil.rmtree(profile, ignore_errors=True)
    return driver


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium per test process (see start_chromium)."""
    driver = start_chromium()
    yield driver
    driver.quit()
    driver.fedgc_cleanup()


def _console_errors(driver) -> list[str]:
    """Browser console entries at level SEVERE since the last call (errors, uncaught exceptions, failed loads)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _wait_for(driver, script: str, *, timeout: float = 10.0, what: str = ""):
    """Poll a JS expression (returned by `script`) until it is truthy; its value, or a failure naming `what`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or script}")
        time.sleep(0.05)


def _open_page(driver, url: str, *, timeout: float = 20.0) -> list[str]:
    """Load url and wait until the report says it is drawn (window.fedgcReport.ready); returns the
    console errors seen while loading."""
    driver.get_log("browser")  # drop what earlier pages left
    driver.get(url)
    _wait_for(driver, "return window.fedgcReport && window.fedgcReport.ready", timeout=timeout, what=f"{url} to draw")
    return _console_errors(driver)


def _plot_point(driver, div_id: str, x: float, y: float) -> tuple[float, float]:
    """Viewport pixel of data point (x, y) in the plotly plot #div_id (scrolled into view first)."""
    return tuple(driver.execute_script(
        "const gd = document.getElementById(arguments[0]); gd.scrollIntoView({block: 'center'});"
        "const fl = gd._fullLayout, r = gd.getBoundingClientRect();"
        "return [r.left + fl.xaxis._offset + fl.xaxis.l2p(arguments[1]), r.top + fl.yaxis._offset + fl.yaxis.l2p(arguments[2])];",
        div_id, x, y,
    ))  # fmt: skip


def _pointer(driver, x: float, y: float, *, click: bool = False) -> None:
    """Move the real mouse pointer to viewport pixel (x, y) (and click there)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(round(x), round(y))
    if click:
        actions.pointer_action.click()
    actions.perform()


@pytest.fixture(scope="session")
def web() -> SimpleNamespace:
    """Browser helpers for the HTML report tests: open_page, wait_for, console_errors, plot_point, pointer."""
    return SimpleNamespace(open_page=_open_page, wait_for=_wait_for, console_errors=_console_errors,
                           plot_point=_plot_point, pointer=_pointer)  # fmt: skip


@pytest.fixture
def ctrl_c_deliverable():
    """SIGINT at Python's own handler (KeyboardInterrupt) for the test, then as it was: a shell that starts
    the suite in the background (`cmd &`) leaves SIGINT ignored, and a test of what a Ctrl-C does needs one
    to arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
