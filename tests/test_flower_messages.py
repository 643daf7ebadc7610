"""fedgc.protocol.wire: plain-dict encoding of what crosses the boundary, and its byte accounting."""

from __future__ import annotations

import numpy as np
import pytest

from fedgc.protocol import wire
from fedgc.protocol.messages import ClientInfo, ClientReply
from fedgc.protocol.transport import CountingTransport


def test_reply_round_trip_keeps_none_fields():
    rng = np.random.default_rng(0)
    reply = ClientReply(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), np.eye(2), None, 3.25, None, "plant", 7)
    payload = wire.encode_reply(reply)
    assert "gradient" not in payload
    back = wire.decode_reply(payload)
    for a, b in zip(back[:4], reply[:4]):
        assert (a is None and b is None) or np.array_equal(a, b)
    assert back.loss == 3.25 and back.client == "plant" and back.round == 7
    assert wire.payload_bytes(payload) == 2 * 5 * 2 * 8 + 4 * 8 + 8 + len("plant") + 8


def test_request_and_setup_round_trip():
    aug = np.arange(6.0).reshape(3, 2)
    a, kind, r = wire.decode_request(wire.encode_request(aug, "gd", 4))
    assert np.array_equal(a, aug) and kind == "gd" and r == 4
    setup = wire.SetupRequest(seed=5, client_order=("a", "b"), learn_theta=True, theta="mlp")
    assert wire.decode_setup(wire.encode_setup(setup)) == setup
    assert setup.seed_for("b", 0) == 6 and setup.seed_for("zz", 3) == 8
    info, raw = wire.decode_setup_reply(wire.encode_setup_reply(ClientInfo("a", 3, 10), 640))
    assert info == ClientInfo("a", 3, 10) and raw == 640


def test_bad_messages_are_clear_errors():
    with pytest.raises(wire.MessageError, match="missing field"):
        wire.decode_reply({"loss": 1.0})
    with pytest.raises(wire.MessageError, match="unknown request kind"):
        wire.encode_request(np.zeros((2, 2)), "pickle", 0)
    with pytest.raises(wire.MessageError, match="neither an array nor a scalar"):
        wire.split_payload({"x": [1, 2]})


def test_counting_transport_counts_both_directions():
    class Echo:
        def clients(self):
            return [ClientInfo("a", 2, 4)]

        def exchange(self, augs, request):
            return [ClientReply(a, a, np.eye(2), None, 0.0) for a in augs]

    t = CountingTransport(Echo())
    t.exchange([np.zeros((4, 2))], "newton")
    s = t.log.summary(raw_data_bytes=1000)
    assert s["bytes_to_clients"] == 64 + len("newton") + 8
    assert s["bytes_to_server"] == 64 + 64 + 32 + 8
    assert s["raw_data_bytes_kept"] == 1000 and s["exchanges"] == 1


def test_pack_arrays_round_trip_and_rejects_bad_layouts():
    rng = np.random.default_rng(1)
    arrays = {"states": rng.normal(size=(7, 3)), "information": rng.normal(size=(3, 3)), "scalar_like": np.array(2.5)}
    buffer, layout = wire.pack_arrays(arrays)
    assert buffer.shape == (21 + 9 + 1,) and layout == "states:7x3;information:3x3;scalar_like:"
    back = wire.unpack_arrays(buffer, layout)
    assert list(back) == list(arrays) and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    with pytest.raises(wire.MessageError, match="covers 30 of the buffer's 31"):
        wire.unpack_arrays(buffer, "states:7x3;information:3x3")
    with pytest.raises(wire.MessageError, match="needs more than"):
        wire.unpack_arrays(buffer, "states:70x3")
    with pytest.raises(wire.MessageError, match="malformed"):
        wire.unpack_arrays(buffer, "states:7xq")
    with pytest.raises(wire.MessageError, match="only float64"):
        wire.pack_arrays({"n": np.arange(3)})


def test_a_private_setup_round_trips():
    from fedgc.privacy.budget import PrivacyPlan
    from fedgc.protocol.messages import ReleaseFigures

    plan = PrivacyPlan(1.25, 1, 0, 20, 10.0, 1e-5, "rdp", False)
    setup = wire.SetupRequest(seed=5, client_order=("a", "b"), privacy='{"epsilon": 10.0}', plan=plan, run="abc")
    back = wire.decode_setup(wire.encode_setup(setup))
    assert back == setup and back.plan == plan and back.index_of("b", 0) == 1
    assert wire.decode_setup(wire.encode_setup(wire.SetupRequest(seed=5))).plan is None
    with pytest.raises(wire.MessageError, match="both its privacy settings and its plan"):
        wire.SetupRequest(privacy='{"epsilon": 10.0}')
    bad = {**wire.encode_setup(setup), "privacy_plan": '{"noise_multiplier": "x"}'}
    with pytest.raises(wire.MessageError, match="privacy_plan is not a privacy plan"):
        wire.decode_setup(bad)
    release = ReleaseFigures(3.5, 7.0, 0.25)
    info, raw = wire.decode_setup_reply(wire.encode_setup_reply(ClientInfo("a", 3, 10, release), 640))
    assert info == ClientInfo("a", 3, 10, release) and raw == 640
    with pytest.raises(wire.MessageError, match="setup reply"):
        wire.decode_setup_reply({"name": "a", "state_dim": 3, "n_steps": 10, "noise_std": 1.0})
