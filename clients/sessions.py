"""Each node's fedgc ClientSession, kept between messages and rebuildable from Flower's context.

The built session is cached per process, keyed by (run id, node id): a warm runtime
(flwr_internals.runtime) answers every round from it. What rebuilds it deterministically lives in
the Flower context's state, which the SuperNode keeps between messages: the node's settings and the
setup (ConfigRecord STATE_SETUP), theta and the last states when theta is learned (ArrayRecord
STATE_THETA) and the last round answered (STATE_ROUND). So a fresh process (Flower's own
flwr-clientapp, one per message) gives the same replies. Nothing is pickled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context

from clients.records import array, scalar
from fedgc.protocol import wire
from fedgc.protocol.session import ClientSession

STATE_SETUP = "fedgc.setup"
STATE_THETA = "fedgc.theta"
STATE_ROUND = "fedgc.round"  # the last round this node answered (a repeated or older round is refused)
NODE_PREFIX = "node."  # the node settings inside STATE_SETUP

Build = Callable[[Mapping[str, Any], wire.SetupRequest, int], ClientSession]  # (settings, setup, fallback index)


class NodeSessions:
    """The sessions of this process's nodes; `build` makes one from node settings and the setup."""

    def __init__(self, build: Build) -> None:
        self.build = build
        self._cache: dict[tuple[int, int], ClientSession] = {}
        self._lock = threading.Lock()

    def start(
        self, context: Context, settings: Mapping[str, Any], setup: wire.SetupRequest, fallback: int
    ) -> ClientSession:
        """A new session for the run (query.setup): built, cached, and recorded in the context."""
        session = self.build(settings, setup, fallback)
        with self._lock:
            # one run per node at a time: forget sessions of earlier runs on this node
            for key in [k for k in self._cache if k[1] == int(context.node_id)]:
                del self._cache[key]
            self._cache[_key(context)] = session
        record = {**{NODE_PREFIX + k: scalar(v) for k, v in settings.items()}, **wire.encode_setup(setup)}
        record["fallback_index"] = int(fallback)
        context.state[STATE_SETUP] = ConfigRecord(record)
        for key in (STATE_THETA, STATE_ROUND):
            if key in context.state:
                del context.state[key]
        return session

    def get(self, context: Context) -> ClientSession:
        """The node's session for the context's run: cached, or rebuilt from the context's state."""
        with self._lock:
            session = self._cache.get(_key(context))
        if session is None:
            session = self._restore(context)
            with self._lock:
                self._cache[_key(context)] = session
        return session

    def answered(self, context: Context, session: ClientSession, round_index: int) -> None:
        """Record in the context what a rebuilt session needs after this round."""
        if session.learn_theta:
            context.state[STATE_THETA] = ArrayRecord({k: array(v) for k, v in session.checkpoint_state().items()})
        context.state[STATE_ROUND] = ConfigRecord({"last": int(round_index)})

    def clear(self) -> None:
        """Forget every cached session (what a fresh process has)."""
        with self._lock:
            self._cache.clear()

    def _restore(self, context: Context) -> ClientSession:
        if STATE_SETUP not in context.state.config_records:
            raise RuntimeError("query.round before query.setup: this node has no session for the run")
        rec = dict(context.state.config_records[STATE_SETUP].items())
        settings = {k[len(NODE_PREFIX) :]: v for k, v in rec.items() if k.startswith(NODE_PREFIX)}
        session = self.build(settings, wire.decode_setup(rec), int(rec.get("fallback_index", 0)))
        if STATE_THETA in context.state.array_records:
            session.restore_state({k: v.numpy() for k, v in context.state.array_records[STATE_THETA].items()})
        if STATE_ROUND in context.state.config_records:
            session.last_round = int(context.state.config_records[STATE_ROUND]["last"])
        return session


def _key(context: Context) -> tuple[int, int]:
    return int(context.run_id), int(context.node_id)
