"""Fuzzing the message checks (hypothesis): every malformed reply is rejected with a clear reason and
leaves the server state as it was; every malformed augmentation is refused by the client, whose state
stays as it was; random payloads fail decoding or validation with fedgc's errors, never anything else.

Each malformed reply is built from a valid one by a mutation that is invalid by construction, and is fed
through run_protocol (a transport corrupts one client's reply to round 1 of a tiny system; the policy
is 'stop'), so the assertion is on the real server state, not on the checker alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedgc.core.kalman import information_matrix
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.privacy.mechanism import ReleaseNoise
from fedgc.protocol.dropout import ClientDropoutError
from fedgc.protocol.loop import run_protocol
from fedgc.protocol.session import ClientSession
from fedgc.protocol.settings import ServerConfig
from fedgc.protocol.transport import LocalTransport
from fedgc.protocol.validation import InvalidMessage, ReplySpec, validate_augmentation, validate_reply
from fedgc.protocol.wire import MessageError, decode_reply, decode_request

FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
SPEC = SystemSpec(n_clients=3, state_dims=2, obs_dims=4, edge_density=0.5, n_steps=40)
CFG = ServerConfig(max_rounds=3, tol=1e-12)
ROUND, VICTIM = 1, 2

DATA = simulate(SPEC, np.random.default_rng(5))


def fresh_sessions() -> list[ClientSession]:
    return [ClientSession(f"c{m}", DATA.system.local_model(m), DATA.y[m]) for m in range(SPEC.n_clients)]


class Corrupt:
    def __init__(self, mutate) -> None:
        self.inner, self.mutate = LocalTransport(fresh_sessions()), mutate

    def clients(self):
        return self.inner.clients()

    def exchange(self, augs, request, round_index=None):
        out = list(self.inner.exchange(augs, request, round_index=round_index))
        if round_index == ROUND:
            out[VICTIM] = self.mutate(out[VICTIM])
        return out


CLEAN: list = []
run_protocol(LocalTransport(fresh_sessions()), CFG, on_checkpoint=CLEAN.append)

# ----------------------------------------------------------------------------- strategies

finite = st.floats(-1e6, 1e6, allow_nan=False)
bad_scalar = st.sampled_from([float("nan"), float("inf"), -float("inf")])
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
bad_dtypes = st.sampled_from([np.float32, np.float16, np.int64, np.int32, np.complex128, np.bool_, np.uint8])
junk = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.integers(),
    st.lists(finite, max_size=4),
    st.dictionaries(st.text(max_size=3), finite, max_size=2),
)


@st.composite
def broken_array(draw, good: np.ndarray):
    kind = draw(st.sampled_from(["nonfinite", "shape", "dtype", "junk"]))
    if kind == "nonfinite":
        a = good.copy()
        k = draw(st.integers(1, a.size))
        idx = draw(st.lists(st.integers(0, a.size - 1), min_size=k, max_size=k))
        a.flat[idx] = draw(bad_scalar)
        return a
    if kind == "shape":
        shape = draw(shapes.filter(lambda s: s != good.shape))
        return np.full(shape, draw(finite))
    if kind == "dtype":
        return good.astype(draw(bad_dtypes))
    return draw(junk)


@st.composite
def broken_information(draw, J: np.ndarray):
    kind = draw(st.sampled_from(["array", "asymmetric", "indefinite"]))
    if kind == "array":
        return draw(broken_array(J))
    if kind == "asymmetric":
        size = draw(st.floats(1e-6, 10.0)) * np.abs(J).max()
        return J + size * np.triu(np.ones_like(J), 1)
    shift = np.linalg.eigvalsh(J)[0] + draw(st.floats(1e-9, 10.0)) * np.abs(J).max()
    return J - shift * np.eye(len(J))


@st.composite
def mutation(draw):
    """(field, reply -> malformed reply)."""
    field = draw(st.sampled_from(["states", "pseudo_obs", "information", "loss", "client", "round", "noise"]))
    if field in ("states", "pseudo_obs"):
        value = draw(broken_array(np.full((SPEC.n_steps, 2), 0.5)))
        return field, lambda r: r._replace(**{field: value})
    if field == "information":
        model = DATA.system.local_model(VICTIM)
        value = draw(broken_information(information_matrix(model.C, model.R)))
        return field, lambda r: r._replace(information=value)
    if field == "loss":
        value = draw(st.one_of(bad_scalar, junk))
        return field, lambda r: r._replace(loss=value)
    if field == "client":
        value = draw(st.one_of(st.text(max_size=6).filter(lambda s: s != f"c{VICTIM}"), st.integers(), st.none()))
        return field, lambda r: r._replace(client=value)
    if field == "round":
        value = draw(
            st.one_of(
                st.integers().filter(lambda i: i != ROUND), st.just(True), st.floats(), st.text(max_size=3), st.none()
            )
        )
        return field, lambda r: r._replace(round=value)
    sub = draw(st.sampled_from(["state_cov", "cross_cov", "pseudo_obs_cov", "state_sensitivity", "junk"]))
    good = ReleaseNoise(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), 1.0)
    if sub == "junk":
        value = draw(st.one_of(st.text(max_size=3), st.integers()))
        return "noise", lambda r: r._replace(noise=value)
    if sub == "state_sensitivity":
        value = draw(st.one_of(bad_scalar, st.floats(max_value=-1e-9), junk))
        return "noise.state_sensitivity", lambda r: r._replace(noise=good._replace(state_sensitivity=value))
    value = draw(broken_array(np.zeros((2, 2))))
    return f"noise.{sub}", lambda r: r._replace(noise=good._replace(**{sub: value}))


# ----------------------------------------------------------------------------- server side


@settings(FUZZ, max_examples=100)  # each example is a protocol run
@given(mutation())
def test_malformed_reply_is_rejected_and_the_state_is_unchanged(case):
    field, mutate = case
    saved = []
    with pytest.raises(ClientDropoutError) as err:
        run_protocol(Corrupt(mutate), CFG, on_checkpoint=saved.append)
    message = str(err.value)
    assert f"round {ROUND}" in message and f"'c{VICTIM}'" in message and f"field '{field}'" in message
    assert [s.round for s in saved] == [1]
    np.testing.assert_array_equal(saved[-1].A_s, CLEAN[0].A_s)
    assert saved[-1].history == CLEAN[0].history


def _valid_reply():
    s = fresh_sessions()[0]
    return s.round(np.zeros((SPEC.n_steps, 2)), "newton", 0)


VALID = _valid_reply()
VALID_SPEC = ReplySpec("c0", 0, SPEC.n_steps, 2, "newton")


def test_the_fuzzed_reply_template_is_itself_valid():
    validate_reply(VALID, VALID_SPEC)  # else every rejection above would be vacuous


payload_values = st.one_of(
    junk, bad_scalar, finite, st.booleans(), shapes.map(np.zeros), st.just(np.zeros((SPEC.n_steps, 2)))
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["states", "pseudo_obs", "information", "gradient", "loss", "client", "round",
                                        "noise_state_cov", "noise_cross_cov", "noise_pseudo_obs_cov",
                                        "noise_state_sensitivity", "extra"]), payload_values, max_size=12))  # fmt: skip
def test_random_reply_payloads_fail_with_fedgc_errors_only(payload):
    try:
        reply = decode_reply(payload)
    except MessageError:
        return
    with pytest.raises(InvalidMessage):
        validate_reply(reply, VALID_SPEC)


# ----------------------------------------------------------------------------- client side


@st.composite
def malformed_augmentation(draw):
    """(augmentation, round) that the client must refuse after having answered round 0."""
    good = np.zeros((SPEC.n_steps, 2))
    if draw(st.booleans()):
        return draw(broken_array(good)), draw(st.integers(1, 10**6))
    return good, draw(st.integers(max_value=0))


SESSION = fresh_sessions()[1]
SESSION.round(np.zeros((SPEC.n_steps, 2)), "newton", 0)


@FUZZ
@given(malformed_augmentation())
def test_malformed_augmentation_is_refused_and_the_client_state_is_unchanged(case):
    aug, rnd = case
    before = SESSION.states.copy()
    with pytest.raises(InvalidMessage) as err:
        SESSION.round(aug, "newton", rnd)
    assert err.value.client == "c1" and err.value.direction == "augmentation"
    assert err.value.field in ("augmentation", "round")
    np.testing.assert_array_equal(SESSION.states, before)
    assert SESSION.last_round == 0


@FUZZ
@given(st.dictionaries(st.sampled_from(["augmentation", "request", "round", "extra"]),
                       st.one_of(payload_values, st.sampled_from(["newton", "gd", "stats", "pickle"])), max_size=4))  # fmt: skip
def test_random_request_payloads_fail_with_fedgc_errors_only(payload):
    try:
        aug, _, rnd = decode_request(payload)
    except MessageError:
        return
    try:
        validate_augmentation(aug, client="c1", n_steps=SPEC.n_steps, state_dim=2, round_index=rnd, last_round=0)
    except InvalidMessage:
        return
    assert aug.shape == (SPEC.n_steps, 2) and aug.dtype == np.float64 and rnd >= 1  # the only way through
