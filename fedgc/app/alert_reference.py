"""Normal-operation references that calibrate a stream's alerts (streaming.alert_calibration, docs/streaming.md).

A reference streamed with the models identified on it is in sample: its change statistics miss the extra
spread a run the models have not seen shows. cross_fit_sessions cuts the reference into two halves and
streams each with models identified on the other half, so the calibration sees the out-of-sample behaviour
of the test run (models fitted on half the data are, if anything, worse: the side of caution).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from fedgc.core.local_model import LocalModel
from fedgc.errors import ConfigError
from fedgc.protocol.session import StreamingSession, ThetaKind

Identify = Callable[[int, str, np.ndarray], LocalModel]
"""(client index, client name, its (T, P) rows) -> the client's model identified on those rows."""


class NormalOperation(NamedTuple):
    """A reference for the alerts: every client's normal-operation rows (T, P_m), columns as its model's,
    the same T for all, and how client i identifies its model on rows of it (the run's own rule and seed)."""

    rows: Mapping[str, np.ndarray]
    identify: Identify


def reference_sessions(
    reference: NormalOperation, models: Mapping[str, LocalModel], *, learn_theta: bool, theta_kind: ThetaKind
) -> list[StreamingSession]:
    """The reference streamed with the stream's own models (streaming.alert_calibration: reference)."""
    return [StreamingSession(name, model, reference.rows[name], learn_theta=learn_theta, theta_kind=theta_kind)
            for name, model in models.items()]  # fmt: skip


def cross_fit_sessions(
    reference: NormalOperation,
    *,
    min_length: int,
    learn_theta: bool,
    theta_kind: ThetaKind,
) -> list[list[StreamingSession]]:
    """Two references: the first half of every client's series streamed with models identified on the second
    half, and the second half with models identified on the first (halves [0, T // 2) and [T // 2, T)).
    min_length: samples a half must hold (the stream's window plus two steps, for two change tests)."""
    lengths = {name: len(rows) for name, rows in reference.rows.items()}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"the alert reference's clients have different lengths: {lengths}")
    T = next(iter(lengths.values()))
    cut = T // 2
    if cut < min_length:
        raise ConfigError(f"streaming.alert_calibration: cross_fit needs a reference of at least {2 * min_length} "
                          f"samples (two halves of window + 2 steps), got {T}")  # fmt: skip
    halves = [
        {name: rows[:cut] for name, rows in reference.rows.items()},
        {name: rows[cut:] for name, rows in reference.rows.items()},
    ]
    out = []
    for fit_on, stream_on in ((halves[1], halves[0]), (halves[0], halves[1])):
        models = {name: reference.identify(i, name, rows) for i, (name, rows) in enumerate(fit_on.items())}
        out.append([StreamingSession(name, models[name], stream_on[name], learn_theta=learn_theta, theta_kind=theta_kind)
                    for name in reference.rows])  # fmt: skip
    return out
