"""Message validation and the dropout policy: a bad or missing reply never reaches the server state;
`stop` ends the run with the last round kept, `continue` goes on without the client and marks it unknown."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fedgc.app.checkpoint import load_checkpoint
from fedgc.app.config import EvaluationSettings, RunConfig
from fedgc.app.runner import run_batch
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.protocol.dropout import ClientDropoutError
from fedgc.protocol.loop import run_protocol
from fedgc.protocol.messages import ClientFailure
from fedgc.protocol.session import ClientSession
from fedgc.protocol.settings import ServerConfig
from fedgc.protocol.transport import LocalTransport
from fedgc.protocol.validation import InvalidMessage
from fedgc.protocol.wire import MessageError, decode_reply, decode_request, encode_reply, encode_request
from fedgc.report.result_json import read_result, write_outputs

SPEC = SystemSpec(n_clients=4, state_dims=2, obs_dims=6, edge_density=0.4, n_steps=600)
# The exchange whose message client c1 answers badly: exchange 2 answers the first predicted A_s of the
# (default) accelerated rounds, which converge at round 3.
AT, VICTIM = 2, 1


@pytest.fixture(scope="module")
def data():
    return simulate(SPEC, np.random.default_rng(21))


def sessions(data, skip=()):
    return [ClientSession(f"c{m}", data.system.local_model(m), data.y[m]) for m in range(len(data.y)) if m not in skip]


class Faulty:
    """A transport that replaces client `client`'s reply to round `at` with fault(reply)."""

    def __init__(self, inner, *, at: int, client: int, fault) -> None:
        self.inner, self.at, self.client, self.fault = inner, at, client, fault
        self.seen: set[int] = set()  # the round indices exchanged

    def clients(self):
        return self.inner.clients()

    def exchange(self, augs, request, round_index=None):
        self.seen.add(round_index)
        out = list(self.inner.exchange(augs, request, round_index=round_index))
        if round_index == self.at and out[self.client] is not None:
            out[self.client] = self.fault(out[self.client])
        return out


def _nan(a):
    a = a.copy()
    a[len(a) // 2, 0] = np.nan
    return a


FAULTS = {
    # name: (fault, field named in the rejection)
    "NaN state": (lambda r: r._replace(states=_nan(r.states)), "states"),
    "inf pseudo-observation": (lambda r: r._replace(pseudo_obs=r.pseudo_obs * np.inf), "pseudo_obs"),
    "wrong shape": (lambda r: r._replace(states=r.states[:-1]), "states"),
    "wrong dtype": (lambda r: r._replace(states=r.states.astype(np.float32)), "states"),
    "wrong round": (lambda r: r._replace(round=r.round - 1), "round"),
    "wrong client": (lambda r: r._replace(client="c2"), "client"),
    "asymmetric J": (
        lambda r: r._replace(information=r.information + np.triu(np.ones_like(r.information), 1)),
        "information",
    ),
    "indefinite J": (lambda r: r._replace(information=-r.information), "information"),
    "J changed": (lambda r: r._replace(information=2.0 * r.information), "information"),
    "missing pseudo-observations": (lambda r: r._replace(pseudo_obs=None), "pseudo_obs"),
    "NaN loss": (lambda r: r._replace(loss=float("nan")), "loss"),
    "not a reply": (lambda r: {"states": r.states}, "states"),
    "no reply": (lambda r: None, None),
    "transport failure": (lambda r: ClientFailure("c1", "no reply within 3 s (node 7)"), None),
}
CFG = ServerConfig(max_rounds=8, tol=1e-12)


@pytest.fixture(scope="module")
def clean(data):
    saved = []
    fit = run_protocol(LocalTransport(sessions(data)), CFG, on_checkpoint=saved.append)
    return fit, saved


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_reply_stops_the_run_and_leaves_the_state_bit_for_bit(data, clean, fault, caplog):
    _, clean_states = clean
    saved = []
    transport = Faulty(LocalTransport(sessions(data)), at=AT, client=VICTIM, fault=FAULTS[fault][0])
    with caplog.at_level(logging.WARNING, logger="fedgc"), pytest.raises(ClientDropoutError) as err:
        run_protocol(transport, CFG, on_checkpoint=saved.append)
    message = str(err.value)
    assert f"round {AT}" in message and "'c1'" in message and "on_dropout is 'stop'" in message
    field = FAULTS[fault][1]
    if field is not None:
        assert f"field '{field}'" in message and f"field '{field}'" in caplog.text
    assert f"round {AT}: client 'c1'" in caplog.text
    assert err.value.completed_round == AT and saved[-1].round == AT
    np.testing.assert_array_equal(saved[-1].A_s, clean_states[AT - 1].A_s)  # A_s after round AT, untouched
    assert saved[-1].history == clean_states[AT - 1].history


@pytest.mark.parametrize("fault", ["NaN state", "wrong client", "indefinite J"])
def test_rejected_reply_under_continue_is_exactly_a_dropout(data, fault):
    """The rejected content never enters: the run equals one where the client simply did not answer."""
    cfg = ServerConfig(max_rounds=8, tol=1e-12, on_dropout="continue")
    bad = run_protocol(Faulty(LocalTransport(sessions(data)), at=AT, client=VICTIM, fault=FAULTS[fault][0]), cfg)
    silent = run_protocol(Faulty(LocalTransport(sessions(data)), at=AT, client=VICTIM, fault=lambda r: None), cfg)
    np.testing.assert_array_equal(bad.A_s, silent.A_s)
    assert [(d.client, d.round) for d in bad.dropouts] == [("c1", AT)]
    assert "rejected" in bad.dropouts[0].reason and FAULTS[fault][1] in bad.dropouts[0].reason


def test_continue_fits_the_remaining_clients_without_the_dropped_ones_states(data):
    """After client 1 drops, the iteration is that of the three-client system, so it converges to the same
    fixed point as a run that never had client 1; every pair involving it is unknown, never zero."""
    cfg = ServerConfig(max_rounds=60, tol=1e-11, on_dropout="continue")
    fit = run_protocol(Faulty(LocalTransport(sessions(data)), at=2, client=VICTIM, fault=lambda r: None), cfg)
    alone = run_protocol(LocalTransport(sessions(data, skip=(VICTIM,))), cfg)
    assert fit.converged and alone.converged
    keep = np.r_[0:2, 4:8]
    np.testing.assert_allclose(fit.A_s[np.ix_(keep, keep)], alone.A_s, rtol=0, atol=1e-8 * np.abs(alone.A_s).max())
    assert np.isnan(fit.A_s[2:4]).all() and np.isnan(fit.A_s[:, 2:4]).all()
    gc = fit.gc
    expected_unknown = np.zeros((4, 4), dtype=bool)
    expected_unknown[VICTIM, :] = expected_unknown[:, VICTIM] = True
    np.fill_diagonal(expected_unknown, False)
    np.testing.assert_array_equal(gc.unknown, expected_unknown)
    assert np.isnan(gc.strength[expected_unknown]).all() and np.isnan(gc.pvalue[expected_unknown]).all()
    assert not gc.edges[expected_unknown].any()
    others = [0, 2, 3]
    np.testing.assert_allclose(gc.pvalue[np.ix_(others, others)], alone.gc.pvalue, rtol=1e-5, equal_nan=True)


def test_gd_rule_continues_after_a_dropout(data):
    cfg = ServerConfig(rule="gd", max_rounds=6, tol=1e-12, on_dropout="continue")
    fit = run_protocol(Faulty(LocalTransport(sessions(data)), at=6, client=3, fault=lambda r: None), cfg)
    assert [(d.client, d.round) for d in fit.dropouts] == [("c3", 6)]  # round 6: the final statistics exchange
    assert fit.gc.unknown[3, :3].all() and np.isfinite(fit.gc.pvalue[0, 1])


def test_too_few_clients_left_stops_even_under_continue(data):
    cfg = ServerConfig(max_rounds=8, tol=1e-12, on_dropout="continue")
    two = [ClientSession(f"c{m}", data.system.local_model(m), data.y[m]) for m in (0, 1)]
    with pytest.raises(ClientDropoutError, match="at least two clients"):
        run_protocol(Faulty(LocalTransport(two), at=2, client=0, fault=lambda r: None), cfg)


def _cfg(on_dropout: str) -> RunConfig:
    return RunConfig(
        name="drop",
        synthetic=SPEC,
        server=ServerConfig(max_rounds=8, tol=1e-12, on_dropout=on_dropout),
        evaluation=EvaluationSettings(oracle=False),
    )


def test_stop_keeps_the_last_completed_round_on_disk(data, clean, tmp_path):
    transport = Faulty(LocalTransport(sessions(data)), at=AT, client=VICTIM, fault=lambda r: None)
    with pytest.raises(ClientDropoutError) as err:
        run_batch(_cfg("stop"), transport, checkpoint_dir=tmp_path)
    assert f"kept in {tmp_path / 'checkpoint.npz'}" in str(err.value) and "--resume" in str(err.value)
    kept = load_checkpoint(tmp_path).state
    assert kept.round == AT
    np.testing.assert_array_equal(kept.A_s, clean[1][AT - 1].A_s)


def test_continue_reports_the_dropout_and_unknown_pairs(data, tmp_path):
    transport = Faulty(LocalTransport(sessions(data)), at=AT, client=VICTIM, fault=FAULTS["wrong shape"][0])
    result = run_batch(_cfg("continue"), transport, checkpoint_dir=tmp_path)
    write_outputs(result, tmp_path)
    out = read_result(tmp_path)
    assert out["resilience"]["dropouts"] == [{"client": "c1", "round": AT, "reason": result.fit.dropouts[0].reason}]
    assert out["unknown"][0][1] and out["unknown"][1][2] and not out["unknown"][0][2]
    assert out["edges"][0][1] is None and out["strength"][1][0] is None and out["pvalue"][2][1] is None
    assert isinstance(out["edges"][0][2], bool) and out["pvalue"][0][2] is not None
    report = (tmp_path / "report.md").read_text()
    assert f"| c1 | {AT} |" in report and "unknown" in report
    assert load_checkpoint(tmp_path).state.active == (True, False, True, True)


def test_client_rejects_a_bad_augmentation_and_keeps_its_state(data):
    s = sessions(data)[0]
    T, D = s.n_steps, s.state_dim
    s.round(np.zeros((T, D)), "newton", 0)
    before = s.states.copy()
    bad = {
        "shape": (np.zeros((T, D + 1)), 1, "shape"),
        "dtype": (np.zeros((T, D), dtype=np.float32), 1, "dtype float32"),
        "NaN": (np.full((T, D), np.nan), 1, "non-finite"),
        "list": ([[0.0] * D] * T, 1, "not a numpy array"),
        "old round": (np.zeros((T, D)), 0, "already answered"),
        "negative round": (np.zeros((T, D)), -1, "integer >= 0"),
    }
    for aug, rnd, problem in bad.values():
        with pytest.raises(InvalidMessage, match=problem) as err:
            s.round(aug, "newton", rnd)
        assert err.value.client == "c0" and err.value.direction == "augmentation"
        np.testing.assert_array_equal(s.states, before)
        assert s.last_round == 0
    failure = LocalTransport([s]).exchange([np.zeros((T, D + 1))], "newton", round_index=1)[0]
    assert isinstance(failure, ClientFailure) and "shape" in failure.reason


def test_decoding_rejects_structurally_broken_messages():
    reply = encode_reply(sessions_reply())
    for key in ("client", "round", "states", "loss"):
        with pytest.raises(MessageError, match="missing"):
            decode_reply({k: v for k, v in reply.items() if k != key})
    with pytest.raises(MessageError, match="not an array"):
        decode_reply({**reply, "pseudo_obs": "x"})
    with pytest.raises(MessageError, match="not a number"):
        decode_reply({**reply, "loss": "1.0"})
    request = encode_request(np.zeros((3, 2)), "newton", 4)
    with pytest.raises(MessageError, match="round"):
        decode_request({k: v for k, v in request.items() if k != "round"})
    with pytest.raises(MessageError, match="not an integer"):
        decode_request({**request, "round": 1.5})


def sessions_reply():
    from fedgc.protocol.messages import ClientReply

    rng = np.random.default_rng(0)
    return ClientReply(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), np.eye(2), None, 1.0, None, "c0", 2)


def test_result_json_has_no_unknowns_without_dropouts(data, tmp_path):
    result = run_batch(_cfg("stop"), LocalTransport(sessions(data)))
    write_outputs(result, tmp_path)
    out = json.loads((tmp_path / "result.json").read_text())
    assert not any(map(any, out["unknown"])) and out["resilience"]["dropouts"] == []
    assert all(isinstance(v, bool) for row in out["edges"] for v in row)


def test_private_run_continues_after_a_dropout(tmp_path):
    """Augmentation noise is calibrated over the remaining clients; the accounting still covers every round."""
    from dataclasses import replace

    from fedgc.app.clients import scenario_sessions, simulate_scenario
    from fedgc.app.config import PrivacySettings
    from fedgc.app.privacy import privacy_plan

    privacy = PrivacySettings(epsilon=20.0, delta=1e-5, clip=7.0, augmentation_noise=True)
    cfg = replace(_cfg("continue"), privacy=privacy, server=replace(_cfg("continue").server, max_rounds=5))
    plan = privacy_plan(cfg)
    # The noise is fresh in every run, and a draw may end the run before exchange 2: the shrinkage can set
    # every block to 0 in round 1, a fixed point (converged). On test_privacy_guarantee's plant 5-9 of 150
    # draws did; here 0 of 300 in one process, but one serial suite run had no dropout at exchange 2.
    for attempt in range(6):
        live = scenario_sessions(cfg, simulate_scenario(cfg), plan)
        faulty = Faulty(LocalTransport(live), at=2, client=0, fault=lambda r: None)
        out = tmp_path / f"attempt{attempt}"
        result = run_batch(cfg, faulty, plan=plan, sessions=live, checkpoint_dir=out)
        if 2 in faulty.seen:
            break
    else:
        pytest.fail("no run reached exchange 2 in 6 draws of the noise")
    assert [(d.client, d.round) for d in result.fit.dropouts] == [("client0", 2)] and result.fit.rounds == 5
    assert np.isfinite(result.fit.A_s[2:, 2:]).all() and result.fit.gc.unknown[0, 1:].all()
    assert len(result.privacy["server_noise_std_per_round"]) == 4
    assert load_checkpoint(out).privacy["server_releases"] == 4


def test_on_dropout_must_be_stop_or_continue():
    from fedgc.app.config import parse_config
    from fedgc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"server.on_dropout must be 'stop' or 'continue', got 'ignore'"):
        parse_config({"server": {"on_dropout": "ignore"}})
