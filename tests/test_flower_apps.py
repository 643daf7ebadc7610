"""The Flower apps in process: ClientApp handlers and ServerApp main loop over a fake Grid.

No Ray and no SuperLink here (fast): the fake grid hands each message to the ClientApp of its
node, with a per-node Context like a SuperNode keeps. Exactness against the local engine, the
rebuild of a session from the context, and a node that stops answering."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict

import clients.app as capp
import clients.records as records
from fedgc.app.checkpoint import CHECKPOINT_JSON, load_checkpoint
from fedgc.app.clients import build_session, simulate_scenario, write_scenario_files
from fedgc.app.config import ClientOptions, parse_config, to_plain
from fedgc.app.runner import run_batch
from fedgc.errors import ConfigError
from fedgc.protocol.dropout import ClientDropoutError
from fedgc.protocol.transport import LocalTransport
from fedgc.protocol.wire import MESSAGE_FORMATS
from server.app import config_from_json, node_overrides
from server.job import Job, run_job
from server.transport import NODE_UNAVAILABLE, ClientFailed, NodeTimeout


class FakeGrid:
    """Grid stand-in: push runs the node's ClientApp at once; silent[node] = exchange from which it never
    answers (-1: not even the setup). A ClientApp that raises answers with Flower's error reply."""

    def __init__(self, node_configs, *, silent=None, forget_sessions=False):
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, 1  # what a ServerApp process has
        self.contexts = {
            1000 + i: Context(run_id=7, node_id=1000 + i, node_config=dict(nc), state=RecordDict(), run_config={})
            for i, nc in enumerate(node_configs)
        }
        self.app = capp.make_client_app()
        self.silent = silent or {}
        self.forget = forget_sessions
        self.store: dict[str, Message] = {}
        self.rounds_seen: dict[int, int] = {}
        self.replies: list[Message] = []

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id
            node = msg.metadata.dst_node_id
            ids.append(msg.metadata.message_id)
            if msg.metadata.message_type == "query.round":
                k = self.rounds_seen.get(node, 0)
                self.rounds_seen[node] = k + 1
                if node in self.silent and k >= self.silent[node]:
                    continue
                if self.forget:
                    capp.sessions.clear()  # a fresh ClientApp process per message
            elif self.silent.get(node) == -1:
                continue
            try:
                reply = self.app(msg, self.contexts[node])
            except Exception as ex:  # what flwr-clientapp sends back (flwr.supernode.runtime.run_clientapp)
                reply = Message(Error(code=2, reason=str(type(ex)) + ":<'" + str(ex) + "'>"), reply_to=msg)
            self.store[msg.metadata.message_id] = reply
            self.replies.append(reply)
        return ids

    def pull_messages(self, message_ids):
        return [self.store.pop(i) for i in list(message_ids) if i in self.store]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    raw = {
        "name": "small",
        "seed": 3,
        "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 400, "edge_density": 0.5},
        # plain rounds: the dropout tests silence a node at round 3, which an accelerated run may not reach
        "server": {"max_rounds": 6, "tol": 1e-9, "acceleration": "none"},
        "evaluation": {"oracle": False},
    }
    cfg = parse_config(raw)
    files = write_scenario_files(cfg, simulate_scenario(cfg), tmp_path_factory.mktemp("small") / "clients")
    return files


def _local(cfg):
    sessions = [build_session(s, cfg.client, seed=cfg.seed + i) for i, s in enumerate(cfg.clients)]
    return run_batch(cfg, LocalTransport(sessions))


def _node_configs(cfg):
    return [node_overrides(cfg)[i] for i in range(len(cfg.clients))]


def test_records_round_trip():
    payload = {"augmentation": np.arange(6.0).reshape(3, 2) / 7, "request": "newton", "round": 2, "flag": True}
    back = records.from_records(records.to_records(payload))
    assert set(back) == set(payload)
    np.testing.assert_array_equal(back["augmentation"], payload["augmentation"])
    assert back["request"] == "newton" and back["round"] == 2 and back["flag"] is True


@pytest.mark.parametrize("message_format", MESSAGE_FORMATS)
def test_records_round_trip_in_each_format(message_format):
    payload = {"states": np.arange(12.0).reshape(4, 3) / 7, "information": np.eye(3) * 2.5, "round": 2, "client": "c0"}
    content = records.to_records(payload, message_format=message_format)
    compact = message_format == "compact"
    assert records.message_format_of(content) == message_format
    assert (records.ARRAYS in content.array_records) is not compact  # compact: one ConfigRecord, no ArrayRecord
    back = records.from_records(content)
    assert set(back) == set(payload)
    for k in ("states", "information"):
        assert back[k].dtype == np.float64 and back[k].flags.writeable
        np.testing.assert_array_equal(back[k], payload[k])
    # no arrays at all: a compact message still says it is compact, so the reply can match it
    empty = records.to_records({"round": 1}, message_format=message_format)
    assert records.message_format_of(empty) == message_format and records.from_records(empty) == {"round": 1}


def test_compact_records_refuse_malformed_content():
    from flwr.app import ArrayRecord, ConfigRecord

    from fedgc.protocol.wire import LAYOUT_KEY, MessageError

    good = records.to_records({"x": np.ones(3)}, message_format="compact")
    cases = {
        "odd length": ConfigRecord({records.PACKED: b"\x00" * 12, LAYOUT_KEY: "x:3"}),
        "not bytes": ConfigRecord({records.PACKED: "abc", LAYOUT_KEY: "x:3"}),
        "no layout": ConfigRecord({records.PACKED: np.ones(3).tobytes()}),
        "short buffer": ConfigRecord({records.PACKED: np.ones(2).tobytes(), LAYOUT_KEY: "x:3"}),
    }
    for _what, config in cases.items():
        content = RecordDict()
        content[records.CONFIG] = config
        with pytest.raises(MessageError):
            records.from_records(content)
    both = records.to_records({"x": np.ones(3)}, message_format="compact")
    both[records.ARRAYS] = ArrayRecord({records.PACKED: records.array(np.ones(3))})
    with pytest.raises(MessageError, match="either"):
        records.from_records(both)
    with pytest.raises(MessageError, match="reserved"):
        records.to_records({"packed": 1.0}, message_format="compact")
    with pytest.raises(ConfigError, match="message format 'pickle'"):
        records.to_records({"x": np.ones(3)}, message_format="pickle")
    assert records.from_records(good)["x"].tolist() == [1.0, 1.0, 1.0]


def test_unknown_message_format_is_refused_before_anything_is_written(small, tmp_path, capsys):
    from fedgc.app.runner import EngineOptions
    from fedgc.cli import main

    with pytest.raises(ConfigError, match="message format 'pickle'"):
        EngineOptions(message_format="pickle")
    assert not (tmp_path / "never").exists()
    with pytest.raises(SystemExit):
        main(["simulate", "simulations/default.yaml", "--out", str(tmp_path / "x"), "--message-format", "pickle"])
    assert "invalid choice: 'pickle'" in capsys.readouterr().err


def test_config_json_round_trip(small):
    cfg = replace(small, client=ClientOptions(learn_theta=True))
    back = config_from_json(json.dumps(to_plain(cfg)))
    assert back.server == cfg.server and back.client == cfg.client and back.seed == cfg.seed
    assert [c.name for c in back.clients] == [c.name for c in cfg.clients]
    assert [Path(c.data) for c in back.clients] == [Path(c.data).resolve() for c in cfg.clients]


@pytest.mark.parametrize("learn_theta, message_format", [(False, "arrays"), (True, "arrays"), (False, "compact")])
def test_fake_grid_matches_local(small, tmp_path, learn_theta, message_format):
    cfg = replace(small, client=ClientOptions(learn_theta=learn_theta))
    local = _local(cfg)
    grid = FakeGrid(
        _node_configs(cfg), forget_sessions=learn_theta
    )  # learn_theta: rebuild from the context every round
    job = Job(cfg=cfg, engine="flower-sim", out_dir=tmp_path, poll_interval=0.001, message_format=message_format)
    result = run_job(grid, job)
    replies = [m for m in grid.replies]
    assert replies and all(
        records.message_format_of(m.content) == message_format for m in replies
    )  # nodes answer in kind
    assert result.communication["message_format"] == message_format
    np.testing.assert_allclose(result.fit.A_s, local.fit.A_s, rtol=0, atol=1e-9)
    assert result.fit.rounds == local.fit.rounds
    comm = result.communication
    assert comm["exchanges"] == local.communication["exchanges"]
    assert comm["bytes_total"] > comm["setup_bytes"] > 0
    assert comm["raw_data_bytes_kept"] == sum(400 * 6 * 8 for _ in cfg.clients)
    last = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    assert last["complete"] and last["round"] == result.fit.rounds and last["error"] is None
    np.testing.assert_array_equal(load_checkpoint(tmp_path).state.A_s, result.fit.A_s)


def test_silent_node_stops_the_run_and_keeps_last_round(small, tmp_path):
    grid = FakeGrid(_node_configs(small), silent={1001: 3})  # client1 answers the opening exchange and rounds 1, 2 only
    job = Job(cfg=small, engine="flower", out_dir=tmp_path, round_timeout=0.3, poll_interval=0.001)
    with pytest.raises(ClientDropoutError, match=r"round 3: .*'client1'.*no reply within 0\.3 s \(node 1001\)") as err:
        run_job(grid, job)
    assert str(tmp_path / "checkpoint.npz") in str(err.value)
    assert load_checkpoint(tmp_path).state.round == 3
    last = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    assert not last["complete"] and last["round"] == 3 and "client1" in last["error"]
    assert load_checkpoint(tmp_path).state.A_s.shape == (6, 6)


def test_launcher_reports_a_failed_run_once(small, tmp_path, monkeypatch):
    """The ServerApp's reason reaches the launcher as the run's details, and checkpoint.json holds
    the same text: the launcher's error says it, and where the round is kept, once."""
    import flwr_internals.control as control
    import server.engine as engine
    from fedgc.errors import FedGCError

    grid = FakeGrid(_node_configs(small), silent={1001: 3})
    job = Job(cfg=small, engine="flower", out_dir=tmp_path, round_timeout=0.3, poll_interval=0.001)
    with pytest.raises(ClientDropoutError) as err:
        run_job(grid, job)
    details = f"ServerApp failed with exception: {err.value}"
    monkeypatch.setattr(control, "run_status", lambda client, run_id: ("finished", "failed", details))
    with pytest.raises(FedGCError) as launched:
        engine._wait(None, 7, 10.0, 10.0, tmp_path)
    text = str(launched.value)
    assert text.startswith(f"Flower run 7 failed: {details}")
    assert text.count("no reply within 0.3 s") == 1
    assert text.count(str(tmp_path / "checkpoint.npz")) == 1


def test_missing_node_is_a_clear_error(small, tmp_path):
    grid = FakeGrid(_node_configs(small)[:2])
    job = Job(cfg=small, engine="flower", out_dir=tmp_path, wait_timeout=0.2)
    with pytest.raises(NodeTimeout, match=r"waited 0.2 s for 3 SuperNodes, 2 connected") as err:
        run_job(grid, job)
    # the nodes that came are asked which clients they serve, so the missing one is named
    assert "no SuperNode serves client(s) 'client2'" in str(err.value)
    assert "'client0' (node 1000), 'client1' (node 1001)" in str(err.value)


def test_no_node_at_all_is_a_clear_error(small, tmp_path):
    grid = FakeGrid([])
    job = Job(cfg=small, engine="flower", out_dir=tmp_path, wait_timeout=0.1)
    with pytest.raises(NodeTimeout, match=r"waited 0.1 s for 3 SuperNodes, 0 connected: no SuperNode serves client\(s\) "
                       r"'client0', 'client1', 'client2'"):  # fmt: skip
        run_job(grid, job)


class RestartedNodeGrid(FakeGrid):
    """client1's first SuperNode (1001) was killed: the SuperLink still lists it and answers its messages
    with NODE_UNAVAILABLE. Its restarted SuperNode (2001, unless `restarted` is False) is listed only from
    the second look at the node list on (it registers while the setup is under way)."""

    def __init__(self, node_configs, *, restarted: bool = True):
        super().__init__(node_configs)
        self.dead = {1001}
        self.hidden = {2001}
        if restarted:
            self.contexts[2001] = Context(run_id=7, node_id=2001, node_config=dict(node_configs[1]), state=RecordDict(),
                                          run_config={})  # fmt: skip

    def get_node_ids(self):
        ids = [n for n in self.contexts if n not in self.hidden] + sorted(self.dead - set(self.contexts))
        self.hidden = set()
        return ids

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            if msg.metadata.dst_node_id not in self.dead:
                ids += super().push_messages([msg])
                continue
            msg.metadata.__dict__["_message_id"] = msg.object_id
            self.store[msg.metadata.message_id] = Message(Error(code=NODE_UNAVAILABLE, reason="Node Unavailable"),
                                                          reply_to=msg)  # fmt: skip
            ids.append(msg.metadata.message_id)
        return ids


def test_a_restarted_node_replaces_its_dead_registration(small, tmp_path):
    """A killed SuperNode, still listed, and the same client's SuperNode started again: the setup waits for
    the new node and the run uses it (the result of a run that never had a dead node)."""
    local = _local(small)
    result = run_job(RestartedNodeGrid(_node_configs(small)), Job(cfg=small, engine="flower", out_dir=tmp_path,
                                                                   poll_interval=0.001, wait_timeout=5.0))  # fmt: skip
    np.testing.assert_allclose(result.fit.A_s, local.fit.A_s, rtol=0, atol=1e-9)
    assert not result.fit.dropouts


def test_a_dead_node_not_restarted_names_its_client(small, tmp_path):
    grid = RestartedNodeGrid(_node_configs(small), restarted=False)
    job = Job(cfg=small, engine="flower", out_dir=tmp_path, poll_interval=0.001, wait_timeout=0.3)
    with pytest.raises(NodeTimeout, match=r"no setup reply for client 'client1'.*node 1001 \(Node Unavailable\)"):
        run_job(grid, job)


def test_node_without_data_path_is_a_clear_error():
    with pytest.raises(Exception, match="no 'data-path' in its node config"):
        capp.node_settings({"client-name": "x"})


class Interrupt(Exception):
    pass


def test_silent_node_under_continue_finishes_without_it(small, tmp_path):
    cfg = replace(small, server=replace(small.server, on_dropout="continue"))
    grid = FakeGrid(_node_configs(cfg), silent={1001: 3})
    job = Job(cfg=cfg, engine="flower", out_dir=tmp_path, round_timeout=0.3, poll_interval=0.001, write_files=True)
    result = run_job(grid, job)
    assert [(d.client, d.round) for d in result.fit.dropouts] == [("client1", 3)]
    assert result.fit.gc.unknown[1, 0] and result.fit.gc.unknown[2, 1] and not result.fit.gc.unknown[0, 2]
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["edges"][0][1] is None and written["resilience"]["dropouts"][0]["client"] == "client1"
    assert grid.rounds_seen[1001] == 4  # after dropping out it is asked nothing more


def test_flower_run_resumes_from_its_checkpoint(small, tmp_path):
    full = run_job(
        FakeGrid(_node_configs(small)), Job(cfg=small, engine="flower", out_dir=tmp_path / "full", poll_interval=0.001)
    )

    def crash(record):
        if record.round == 3:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run_job(
            FakeGrid(_node_configs(small)),
            Job(cfg=small, engine="flower", out_dir=tmp_path / "cut", poll_interval=0.001, on_round=crash),
        )
    assert load_checkpoint(tmp_path / "cut").state.round == 2
    fresh = FakeGrid(_node_configs(small))  # restarted SuperNodes: no session, no context state
    resumed = run_job(
        fresh, Job(cfg=small, engine="flower", out_dir=tmp_path / "cut", poll_interval=0.001, resume=True)
    )
    np.testing.assert_allclose(resumed.fit.A_s, full.fit.A_s, rtol=0, atol=1e-9)
    assert resumed.fit.resumed_from == 2 and resumed.fit.history == full.fit.history
    assert min(fresh.rounds_seen.values()) == full.fit.rounds - 2  # rounds 2.. only, not the opening exchange
    with pytest.raises(ConfigError, match="learn_theta"):
        theta = replace(small, client=ClientOptions(learn_theta=True))
        run_job(FakeGrid(_node_configs(small)), Job(cfg=theta, engine="flower", out_dir=tmp_path / "cut", resume=True))


def test_a_failed_setup_names_its_client(small, tmp_path):
    """The server cannot know which client a node serves before the setup: the ClientApp's error says."""
    configs = _node_configs(small)
    configs[1] = {**configs[1], "data-path": str(tmp_path / "gone.csv")}
    with pytest.raises(ClientFailed, match=r"setup: .*client 'client1': data file .*gone\.csv': file not found") as err:
        run_job(FakeGrid(configs), Job(cfg=small, engine="flower", out_dir=tmp_path, poll_interval=0.001))
    assert "no setup reply for client(s) 'client1'" in str(err.value)


def test_a_silent_setup_names_the_client_nobody_answered_for(small, tmp_path):
    grid = FakeGrid(_node_configs(small), silent={1002: -1})
    job = Job(cfg=small, engine="flower", out_dir=tmp_path, wait_timeout=0.3, poll_interval=0.001)
    with pytest.raises(NodeTimeout, match=r"setup: no setup reply for client 'client2', and the one SuperNode that did "
                       r"not answer is node 1002 \(no reply within 0.3 s\)"):  # fmt: skip
        run_job(grid, job)


def test_the_round_log_is_read_line_by_line_as_it_grows(tmp_path):
    from fedgc.protocol.state import RoundRecord
    from server.round_log import ROUNDS_FILE, RoundLog, RoundTail

    tail = RoundTail(tmp_path / ROUNDS_FILE)
    assert tail.new() == []  # not there yet
    log = RoundLog(tmp_path / ROUNDS_FILE)
    log(RoundRecord(1, 2.5, float("inf")))
    with (tmp_path / ROUNDS_FILE).open("a") as f:
        f.write('{"round": 2, "lo')  # a line being written
    assert tail.new() == [RoundRecord(1, 2.5, float("inf"))]
    with (tmp_path / ROUNDS_FILE).open("a") as f:
        f.write('ss": 1.5, "change": 0.25}\n')
    assert tail.new() == [RoundRecord(2, 1.5, 0.25)] and tail.seen == 2
    RoundLog(tmp_path / ROUNDS_FILE)(RoundRecord(1, 9.0, 1.0))  # a new run starts the file again
    assert tail.new() == [RoundRecord(1, 9.0, 1.0)]


def test_deployed_run_writes_its_rounds_as_they_complete(small, tmp_path):
    from server.app import job_from_context
    from server.round_log import ROUNDS_FILE, RoundTail

    context = Context(run_id=7, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"fedgc-config": json.dumps(to_plain(small)), "out-dir": str(tmp_path)})  # fmt: skip
    job = job_from_context(context)
    job.poll_interval = 0.001
    tail, seen = RoundTail(tmp_path / ROUNDS_FILE), []
    inner = job.on_round
    job.on_round = lambda record: (inner(record), seen.append(tail.new()))
    result = run_job(FakeGrid(_node_configs(small)), job)
    assert seen == [[r] for r in result.fit.history]  # each round readable right after it completed


def test_wait_and_round_timeouts_come_from_the_command_line(small, tmp_path, monkeypatch, capsys):
    import fedgc.app.runner as runner
    from fedgc.cli import main
    from fedgc.errors import FedGCError
    from server.engine import DeployedEngine

    given = []

    def run(cfg, *, options, **kwargs):
        given.append(options)
        raise FedGCError("stop here")

    monkeypatch.setattr(runner, "run", run)
    base = ["simulate", "simulations/default.yaml", "--out", str(tmp_path / "x"), "--engine", "flower", "--quiet"]
    assert main([*base, "--wait-timeout", "30", "--round-timeout", "7.5"]) == 2
    assert (given[0].wait_timeout, given[0].round_timeout) == (30.0, 7.5)
    rc = DeployedEngine().run_config(small, tmp_path, given[0], False)
    assert (rc["wait-timeout"], rc["round-timeout"]) == (30.0, 7.5) and rc["fast-object-pulls"] is True
    assert DeployedEngine().run_config(small, tmp_path, runner.EngineOptions(), False)["round-timeout"] == 120.0
    assert main([*base, "--round-timeout", "-1"]) == 2
    assert "--round-timeout must be a number of seconds > 0, got -1.0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- private runs


def _private(small, folder: Path, **privacy):
    """`small`'s clients copied into `folder` (their ledgers land there), with a privacy section."""
    import shutil

    from fedgc.app.config import PrivacySettings

    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for spec in small.clients:
        data, model = folder / Path(spec.data).name, folder / Path(spec.model).name
        shutil.copy(spec.data, data)
        shutil.copy(spec.model, model)
        specs.append(replace(spec, data=data, model=model))
    settings = PrivacySettings(**{"epsilon": 10.0, "delta": 1e-5, "clip": 5.0, **privacy})
    return replace(small, clients=tuple(specs), privacy=settings)


def test_private_nodes_match_the_local_engine(small, tmp_path):
    """Reproducible noise: each node builds the mechanism the local engine builds in process (the same seed
    per client), rebuilt from the context every round; the same A_s and the same privacy section."""
    from fedgc.app.runner import run_local

    cfg = _private(small, tmp_path / "data", reproducible_noise=True)
    local = run_local(cfg, mode="run", out_dir=tmp_path / "local")
    grid = FakeGrid(_node_configs(cfg), forget_sessions=True)
    result = run_job(grid, Job(cfg=cfg, engine="flower", out_dir=tmp_path / "flower", poll_interval=0.001))
    np.testing.assert_allclose(result.fit.A_s, local.fit.A_s, rtol=0, atol=1e-9)
    assert result.privacy == local.privacy and result.privacy["private"] is False
    assert set(result.privacy["per_client"]) == {"client0", "client1", "client2"}
    assert all(c["client_noise_std"] > 0 and c["clip"] == 5.0 for c in result.privacy["per_client"].values())
    assert not list((tmp_path / "data").glob("*.fedgc-privacy.json"))  # reproducible noise: no release to record
    saved = json.loads((tmp_path / "flower" / "flower_run.json").read_text())
    assert saved["privacy"] == result.privacy  # what a deployed submitter reads back


def test_private_nodes_keep_their_noise_seed_in_their_ledger(small, tmp_path):
    """Fresh noise from each node's entropy, recorded in the ledger beside its data file: a session rebuilt
    in a fresh process (every round here) and a rerun of the same run redraw the same release; without the
    ledger the noise is new. epsilon 100: at the default 10 this small system's release has a signal-to-noise
    ratio near 0.1, and about one run in ten shrinks every block of A_s to zero in round 1 and stops there
    (converged), with no second round to rebuild a session for."""
    cfg = _private(small, tmp_path / "data", epsilon=100.0)
    runs = []
    for k in range(2):
        grid = FakeGrid(_node_configs(cfg), forget_sessions=True)
        job = Job(cfg=cfg, engine="flower", out_dir=tmp_path / f"run{k}", poll_interval=0.001)
        runs.append(run_job(grid, job))
    ledgers = sorted(p.name for p in (tmp_path / "data").glob("*.fedgc-privacy.json"))
    assert ledgers == [f"client{m}.csv.fedgc-privacy.json" for m in range(3)]
    np.testing.assert_array_equal(runs[0].fit.A_s, runs[1].fit.A_s)
    assert runs[0].privacy["private"] is True and runs[0].fit.rounds > 1
    for path in (tmp_path / "data").glob("*.fedgc-privacy.json"):
        path.unlink()
    fresh = run_job(FakeGrid(_node_configs(cfg)), replace(job, out_dir=tmp_path / "run2"))
    assert np.abs(fresh.fit.A_s - runs[0].fit.A_s).max() > 1e-3


@pytest.mark.parametrize("change, refusal", [
    ({"model-path": ""}, r"client 'client1'.*privacy needs given local models"),
    ({"constant-columns": "error"}, r"client 'client1'.*set column cleaning"),
    ({"data-path": "holes"}, r"client 'client1': data file .*holes\.csv' has 1 missing cell"),
])  # fmt: skip
def test_a_private_node_refuses_what_its_data_would_decide(small, tmp_path, change, refusal):
    """The local engine's refusals, on the node's own settings (its node config), before any release."""
    cfg = _private(small, tmp_path)
    configs = _node_configs(cfg)
    if change.get("data-path") == "holes":
        lines = Path(configs[1]["data-path"]).read_text().splitlines()
        cells = lines[5].split(",")
        lines[5] = ",".join(["", *cells[1:]])
        (tmp_path / "holes.csv").write_text("\n".join(lines) + "\n")
        change = {"data-path": str(tmp_path / "holes.csv")}
    configs[1] = {k: v for k, v in {**configs[1], **change}.items() if v != ""}
    with pytest.raises(ClientFailed, match=refusal):
        run_job(FakeGrid(configs), Job(cfg=cfg, engine="flower", out_dir=tmp_path / "out", poll_interval=0.001))
    assert not list(tmp_path.glob("client1*.fedgc-privacy.json"))  # refused before its ledger records a release


def test_a_node_refuses_a_plan_weaker_than_the_settings(small, tmp_path):
    from fedgc.app.privacy import privacy_plan, privacy_text
    from fedgc.protocol import wire

    cfg = _private(small, tmp_path)
    plan = privacy_plan(cfg)
    weak = plan._replace(noise_multiplier=plan.noise_multiplier / 2)
    text = privacy_text(cfg.privacy)
    setup = wire.SetupRequest(seed=cfg.seed, client_order=("client0",), privacy=text, plan=weak, run="r")
    weaker = r"client 'client0': the privacy plan's noise multiplier .* over the target 10"
    with pytest.raises(ConfigError, match=weaker):
        capp.build(_node_configs(cfg)[0], setup)
    other = plan._replace(epsilon=20.0)
    setup = replace(setup, plan=other)
    with pytest.raises(ConfigError, match="does not match the privacy settings"):
        capp.build(_node_configs(cfg)[0], setup)
    assert not list(tmp_path.glob("*.fedgc-privacy.json"))
    session = capp.build(_node_configs(cfg)[0], replace(setup, plan=plan))
    assert session.release is not None and session.release.clip == 5.0 and session.exact_window is None


# ------------------------------------------------------------------------------- resuming without a dead node


def _stopped_at_round_3(small, out: Path):
    """A run of `small` interrupted after round 2 (its checkpoint in `out`)."""

    def crash(record):
        if record.round == 3:
            raise Interrupt()

    with pytest.raises(Interrupt):
        job = Job(cfg=small, engine="flower", out_dir=out, poll_interval=0.001, on_round=crash)
        run_job(FakeGrid(_node_configs(small)), job)
    assert load_checkpoint(out).state.round == 2


@pytest.mark.parametrize("dead", ["gone", "listed"])
def test_resume_under_continue_goes_on_at_once_without_a_dead_node(small, tmp_path, dead):
    """client2's SuperNode died while the run was stopped: gone from the SuperLink's list, or still listed
    (its heartbeats not yet missed) but silent. Resumed under on_dropout: continue, the run does not wait
    wait_timeout (60 s) for it: client2 counts as dropped at the resume round, by name, and the run ends."""
    import time

    _stopped_at_round_3(small, tmp_path)
    cfg = replace(small, server=replace(small.server, on_dropout="continue"))
    grid = FakeGrid(_node_configs(small)[:2]) if dead == "gone" else FakeGrid(_node_configs(small), silent={1002: -1})
    job = Job(cfg=cfg, engine="flower", out_dir=tmp_path, poll_interval=0.001, resume=True, wait_timeout=60.0,
              round_timeout=0.5, write_files=True)  # fmt: skip
    t0 = time.monotonic()
    result = run_job(grid, job)
    assert time.monotonic() - t0 < 15.0
    [dropout] = result.fit.dropouts
    assert (dropout.client, dropout.round) == ("client2", 2) and result.fit.resumed_from == 2  # the re-sent exchange
    assert "no SuperNode answered its setup when the run resumed" in dropout.reason
    if dead == "listed":
        assert "node 1002 silent for 0.5 s" in dropout.reason
    assert result.fit.gc.unknown[2, 0] and not result.fit.gc.unknown[0, 1] and np.isnan(result.fit.A_s[4:, 4:]).all()
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["resilience"]["dropouts"][0]["client"] == "client2"


def test_resume_under_stop_still_needs_every_node(small, tmp_path):
    _stopped_at_round_3(small, tmp_path)
    job = Job(cfg=small, engine="flower", out_dir=tmp_path, poll_interval=0.001, resume=True, wait_timeout=0.3)
    with pytest.raises(NodeTimeout, match=r"no SuperNode serves client\(s\) 'client2'"):
        run_job(FakeGrid(_node_configs(small)[:2]), job)


def test_fake_grid_siv_run_matches_local(small, tmp_path):
    """Identified models: the nodes send their snapshot series with the setup reply and the server's SIV
    p-values are the local engine's; the snapshots count as setup bytes to the server."""
    cfg = replace(small, clients=tuple(replace(c, model="identify") for c in small.clients))
    assert cfg.gc_test == "siv"
    local = run_batch(cfg, LocalTransport([build_session(s, cfg.client, seed=cfg.seed + i, snapshots="auto")
                                           for i, s in enumerate(cfg.clients)]))  # fmt: skip
    result = run_job(
        FakeGrid(_node_configs(cfg)), Job(cfg=cfg, engine="flower-sim", out_dir=tmp_path, poll_interval=0.001)
    )
    assert result.fit.gc.test == local.fit.gc.test == "siv"
    np.testing.assert_allclose(result.fit.gc.log10_pvalue, local.fit.gc.log10_pvalue, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(result.fit.gc.edges, local.fit.gc.edges)
    assert result.communication["setup_bytes"] > local.communication["setup_bytes"] > 0
