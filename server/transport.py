"""FlowerTransport: fedgc's Transport protocol over a Flower Grid (Message API).

Each exchange pushes one message per node (query.round, the node's augmentation) in one
grid.push_messages call, and polls grid.pull_messages at a short interval (from 20 ms, backing
off to 100 ms while nothing arrives) until every node has answered or the round timeout passes.
Flower's own send_and_receive sleeps 3 s between polls, which would dominate a round that costs
tens of milliseconds.

In a round, a node that does not answer in time, answers with an error (e.g. its ClientApp
rejected the augmentation) or sends a reply that does not decode is returned as a
fedgc.protocol.loop.ClientFailure: the protocol applies server.on_dropout to it. Setup failures raise.
Every failure names the clients concerned (a node id, which means nothing to an operator but is
what the SuperLink's log shows, comes only next to a name): before the setup the server knows the
clients of the run config but not which node serves which, so a failed setup is named by the
ClientApp's own error (clients.app names its client-name) and a silent one by elimination.

A resumed run under server.on_dropout: continue may go on without clients whose SuperNode is dead
(`absent`: the checkpoint's clients and state dims). It waits for the SuperNodes only until no new one
has connected for ABSENT_SETTLE seconds, and for the setup replies of the connected ones at most the
round timeout (a dead node that the SuperLink still lists answers nothing, until Flower marks it
unavailable after two missed heartbeats); a configured client with no setup reply then is absent: every
exchange returns its ClientFailure at once, and the protocol drops it at the resume round, by name.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid

from clients.records import from_records, record_bytes, to_records
from fedgc.errors import FedGCError
from fedgc.protocol import wire
from fedgc.protocol.messages import ClientFailure, ClientInfo, ClientReply, RequestKind

# The Error.code of a reply the SuperLink makes for a node that is gone (Flower's private
# flwr.common.constant.ErrorCode.NODE_UNAVAILABLE, a value of its wire protocol; tests/test_flwr_internals.py
# checks it against Flower's).
NODE_UNAVAILABLE = 5


POLL_GROWTH = 1.5  # per empty pull
MAX_POLL = 0.1  # longest wait between pulls while a round is out (s)
ABSENT_SETTLE = 3.0  # s without a new SuperNode after which a resumed run under continue stops waiting for more


class Refusal(NamedTuple):
    """A node's error reply: Flower's error code and reason (NODE_UNAVAILABLE: the SuperLink's, for a dead node)."""

    code: int
    reason: str


class NodeTimeout(FedGCError):
    """SuperNodes that did not connect, or did not answer the setup, in time."""


class ClientFailed(FedGCError):
    """A client answered the setup with an error."""


class FlowerTransport:
    """Replies come back in the order of `clients()` (the configured client order)."""

    def __init__(
        self,
        grid: Grid,
        *,
        setup: wire.SetupRequest,
        expected_nodes: int,
        wait_timeout: float = 60.0,
        round_timeout: float = 60.0,
        poll_interval: float = 0.02,
        send_and_receive: bool = False,
        message_format: str = "arrays",
        absent: Mapping[str, int] | None = None,
    ) -> None:
        """absent: clients that may be missing (name -> state dim, from the checkpoint of a run resumed under
        server.on_dropout: continue); None: every configured client must set up."""
        self.grid = grid
        self.absent = None if absent is None else dict(absent)
        self.absent_reasons: dict[str, str] = {}  # absent client -> why, in its ClientFailure
        self._unheard_nodes = ""  # the setup's dead or silent nodes, when absent clients are allowed
        # clients.records.to_records; nodes reply in the same format
        self.message_format = wire.check_message_format(message_format)
        self.send_and_receive = bool(send_and_receive)  # Flower's own (3 s poll), for comparison
        self.setup = setup
        self.expected_nodes = int(expected_nodes)
        self.wait_timeout = float(wait_timeout)
        self.round_timeout = float(round_timeout)
        self.poll_interval = float(poll_interval)
        self.node_ids: list[int] = []
        self.infos: list[ClientInfo] = []
        self.raw_data_bytes: dict[str, int] = {}
        self.round_seconds: list[float] = []
        self.wire_to_clients = 0
        self.wire_to_server = 0
        self.setup_to_clients = 0
        self.setup_to_server = 0
        self._exchange = 0
        self.timeline: list[dict[str, float]] = []
        self._pushed = self._first = self._last = 0.0

    # ------------------------------------------------------------------ connection and setup

    def wait_for_nodes(self) -> list[int]:
        """The connected SuperNodes once there are expected_nodes of them (NodeTimeout after wait_timeout); with
        absent clients allowed, also those connected once none has come for ABSENT_SETTLE seconds."""
        start = time.monotonic()
        deadline, settled, seen = start + self.wait_timeout, start + ABSENT_SETTLE, -1
        while True:
            ids = sorted(int(n) for n in self.grid.get_node_ids())
            now = time.monotonic()
            if len(ids) >= self.expected_nodes:
                return ids
            if len(ids) != seen:
                seen, settled = len(ids), now + ABSENT_SETTLE
            if self.absent is not None and ids and now >= min(settled, deadline):
                return ids
            if now >= deadline:
                raise NodeTimeout(
                    f"waited {self.wait_timeout:g} s for {self.expected_nodes} SuperNodes, {len(ids)} connected"
                )
            self._idle()

    def _idle(self) -> None:
        """The pause between two looks at the SuperLink's node list."""
        time.sleep(min(0.2, max(self.poll_interval, 0.01)))

    def connect(self) -> list[ClientInfo]:
        """Wait for the nodes, send every node the setup and order the clients as configured."""
        try:
            ids = self.wait_for_nodes()
        except NodeTimeout as timeout:
            raise self._name_missing(timeout) from None
        found = self._setup(ids)
        order = list(self.setup.client_order) or sorted(found)
        missing = [n for n in order if n not in found]
        if missing and self.absent is not None and found and all(n in self.absent for n in missing):
            return self._without(order, found, missing)
        if missing:
            raise FedGCError(
                f"no SuperNode serves configured client(s) {missing}; connected nodes serve {sorted(found)} "
                "(check each SuperNode's client-name in --node-config)"
            )
        extra = sorted(set(found) - set(order))
        if extra and len(found) - len(extra) < self.expected_nodes:
            raise FedGCError(f"SuperNodes serve clients {extra} that are not in the run config")
        self.node_ids = [found[n][0] for n in order]
        self.infos = [found[n][1] for n in order]
        return self.infos

    def _without(
        self, order: list[str], found: dict[str, tuple[int, ClientInfo]], missing: list[str]
    ) -> list[ClientInfo]:
        """The clients, the absent ones standing in with their checkpointed dims (never asked: every exchange
        returns their failure, and on_dropout continue drops them by name)."""
        assert self.absent is not None
        steps = {info.n_steps for _, info in found.values()}
        n_steps = steps.pop() if len(steps) == 1 else 0  # different lengths: the protocol names them
        unheard = self._unheard_nodes
        how = f"; {unheard}" if unheard else ""
        for name in missing:
            self.absent_reasons[name] = f"no SuperNode answered its setup when the run resumed{how}"
        self.node_ids = [found[n][0] if n in found else -1 for n in order]
        self.infos = [found[n][1] if n in found else ClientInfo(n, int(self.absent[n]), n_steps) for n in order]
        return self.infos

    def _setup(self, ids: list[int]) -> dict[str, tuple[int, ClientInfo]]:
        """Send the setup to the nodes `ids`: client name -> (node id, its ClientInfo)."""
        found: dict[str, tuple[int, ClientInfo]] = {}
        errors, late = self._ask_setup(ids, found)
        self._unheard_nodes = ""
        if self.absent is not None:  # dead nodes (unavailable, or silent) are absent clients, other errors count
            gone = [k for k, e in errors.items() if e.code == NODE_UNAVAILABLE]
            parts = [f"node {ids[k]} unavailable (it missed its heartbeats)" for k in gone]
            parts += [f"node {ids[k]} silent for {self._setup_timeout():g} s" for k in late]
            self._unheard_nodes = ", ".join(parts)
            errors, late = {k: e for k, e in errors.items() if k not in gone}, []
        else:
            ids, found, errors, late = self._replace_dead_nodes(ids, found, errors, late)
        if errors or late:
            raise self._setup_failed(ids, found, errors, late)
        return found

    def _ask_setup(
        self, ids: list[int], found: dict[str, tuple[int, ClientInfo]]
    ) -> tuple[dict[int, Refusal], list[int]]:
        """Send the setup to the nodes `ids`; the clients they serve go into `found` (client name -> (node id,
        ClientInfo); two nodes serving one client is an error). Returns the errors and the silent nodes, by
        index into ids."""
        payload = wire.encode_setup(self.setup)
        content_bytes = wire.payload_bytes(payload)
        msgs = [
            Message(
                to_records(payload, message_format=self.message_format),
                dst_node_id=n,
                message_type="query.setup",
                group_id="setup",
            )
            for n in ids
        ]
        self.setup_to_clients += content_bytes * len(ids)
        replies, errors, late = self._collect(msgs, ids, "setup", names=None)
        for k, reply in replies.items():
            node = ids[k]
            payload = from_records(reply.content)
            self.setup_to_server += wire.payload_bytes(payload)
            info, raw = wire.decode_setup_reply(payload)
            if info.name in found:
                raise FedGCError(f"two SuperNodes ({found[info.name][0]} and {node}) both serve client '{info.name}'")
            found[info.name] = (node, info)
            self.raw_data_bytes[info.name] = raw
        return errors, late

    def _replace_dead_nodes(
        self, ids: list[int], found: dict[str, tuple[int, ClientInfo]], errors: dict[int, Refusal], late: list[int]
    ) -> tuple[list[int], dict[str, tuple[int, ClientInfo]], dict[int, Refusal], list[int]]:
        """A killed SuperNode stays listed by the SuperLink until it misses its heartbeats, and its setup
        comes back as NODE_UNAVAILABLE. When dead nodes are the only failures, the user has usually started
        that client's SuperNode again, under a new node id: wait for nodes not asked yet (at most
        wait_timeout) and set them up too. Dead nodes then count only while a configured client is unheard."""
        dead = {k for k, e in errors.items() if e.code == NODE_UNAVAILABLE}
        if not dead or len(dead) != len(errors) or late:
            return ids, found, errors, late
        ids, errors = list(ids), dict(errors)

        def unheard() -> list[str]:
            return [n for n in self.setup.client_order if n not in found]

        deadline = time.monotonic() + self.wait_timeout
        while unheard() and time.monotonic() < deadline:
            new = sorted(int(n) for n in self.grid.get_node_ids() if int(n) not in ids)
            if not new:
                self._idle()
                continue
            more_errors, more_late = self._ask_setup(new, found)
            base = len(ids)
            ids += new
            errors.update({base + k: e for k, e in more_errors.items()})
            late += [base + k for k in more_late]
            if late or any(e.code != NODE_UNAVAILABLE for e in errors.values()):
                break
        if not unheard():
            errors = {k: e for k, e in errors.items() if e.code != NODE_UNAVAILABLE}
        return ids, found, errors, late

    def _setup_failed(self, ids, found, errors: dict[int, Refusal], late: list[int]) -> FedGCError:
        """Which clients did not set up: a failed ClientApp says (its error names its client), a silent
        or dead node cannot, so the configured clients without a setup reply are named too (one such
        node and one such client: by name, with the node's id beside it)."""
        unheard = [n for n in self.setup.client_order if n not in found]
        dead = [k for k, e in errors.items() if e.code == NODE_UNAVAILABLE]
        if len(unheard) == 1 and len(late) + len(dead) == 1 and len(errors) == len(dead):
            k = (late or dead)[0]
            why = f"no reply within {self._setup_timeout():g} s" if late else errors[k].reason
            return NodeTimeout(
                f"setup: no setup reply for client '{unheard[0]}', and the one SuperNode that did not answer is node "
                f"{ids[k]} ({why}): is client '{unheard[0]}'s SuperNode running?"
            )
        parts = [f"failed on a SuperNode (node {ids[k]}): {e.reason}" for k, e in sorted(errors.items())]
        if late:
            nodes = ", ".join(str(ids[k]) for k in late)
            parts.append(f"no reply within {self._setup_timeout():g} s from {len(late)} SuperNode(s) (node {nodes})")
        if unheard:
            parts.append(f"no setup reply for client(s) {', '.join(map(repr, unheard))}")
        return (ClientFailed if len(errors) > len(dead) else NodeTimeout)("setup: " + "; ".join(parts))

    def _setup_timeout(self) -> float:
        """How long the setup replies are waited for: wait_timeout, or (absent clients allowed) at most a round's."""
        return self.wait_timeout if self.absent is None else min(self.wait_timeout, self.round_timeout)

    def _name_missing(self, timeout: NodeTimeout) -> NodeTimeout:
        """Too few SuperNodes came: ask those that did which clients they serve, and name the others."""
        ids = sorted(int(n) for n in self.grid.get_node_ids())
        order = list(self.setup.client_order)
        if not order:
            return NodeTimeout(f"{timeout}; start one SuperNode per client, or lower num-nodes")
        if not ids:
            return NodeTimeout(
                f"{timeout}: no SuperNode serves client(s) {', '.join(map(repr, order))}. Is each client's SuperNode "
                "running and connected to this SuperLink (and, with --enable-supernode-auth, its key registered)?"
            )
        try:
            found = self._setup(ids)
        except FedGCError as exc:
            return NodeTimeout(f"{timeout}; asking the connected nodes which clients they serve failed too: {exc}")
        missing = [n for n in order if n not in found]
        serving = ", ".join(f"{n!r} (node {found[n][0]})" for n in sorted(found))
        return NodeTimeout(
            f"{timeout}: no SuperNode serves client(s) {', '.join(map(repr, missing)) or '(none)'}; the connected ones serve {serving}. "
            "Is each missing client's SuperNode running, and (SuperLink with --enable-supernode-auth) its key registered?"
        )

    # ------------------------------------------------------------------ Transport protocol

    def clients(self) -> list[ClientInfo]:
        if not self.infos:
            self.connect()
        return list(self.infos)

    def exchange(
        self, augmentations: Sequence[np.ndarray | None], request: RequestKind, round_index: int | None = None
    ) -> list[ClientReply | ClientFailure | None]:
        if len(augmentations) != len(self.node_ids):
            raise FedGCError(f"{len(augmentations)} augmentations for {len(self.node_ids)} clients")
        r = self._exchange if round_index is None else int(round_index)
        out: list[ClientReply | ClientFailure | None] = [None] * len(self.node_ids)
        for k, aug in enumerate(augmentations):
            if aug is not None and self.infos[k].name in self.absent_reasons:
                out[k] = ClientFailure(self.infos[k].name, self.absent_reasons[self.infos[k].name])
        asked = [k for k, aug in enumerate(augmentations) if aug is not None and out[k] is None]
        msgs = []
        for k in asked:
            content = to_records(wire.encode_request(augmentations[k], request, r), message_format=self.message_format)
            self.wire_to_clients += record_bytes(content)
            msgs.append(Message(content, dst_node_id=self.node_ids[k], message_type="query.round", group_id=str(r)))
        t0 = time.perf_counter()
        nodes = [self.node_ids[k] for k in asked]
        names = [self.infos[k].name for k in asked]
        replies, errors, late = self._collect(msgs, nodes, f"round {r}", names=names)
        self.round_seconds.append(time.perf_counter() - t0)
        self.timeline.append(
            {"push_s": self._pushed - t0, "first_reply_s": self._first - t0, "last_reply_s": self._last - t0}
        )
        self._exchange = r + 1
        failures = {j: f"failed (node {nodes[j]}): {e.reason}" for j, e in errors.items()}
        failures.update({j: f"no reply within {self.round_timeout:g} s (node {nodes[j]})" for j in late})
        for j, k in enumerate(asked):
            name = self.infos[k].name
            if j in failures:
                out[k] = ClientFailure(name, failures[j])
                continue
            self.wire_to_server += record_bytes(replies[j].content)
            try:
                out[k] = wire.decode_reply(from_records(replies[j].content))
            except (wire.MessageError, TypeError, ValueError) as exc:
                out[k] = ClientFailure(name, f"reply does not decode: {exc}")
        return out

    # ------------------------------------------------------------------ push / poll

    def _collect(self, msgs: list[Message], nodes: Sequence[int], what: str, names: Sequence[str] | None):
        """Push msgs and pull their replies: (replies by index, error reasons by index, indices of the
        nodes that stayed silent until the timeout: wait_timeout for the setup, round_timeout after)."""
        if self.send_and_receive and what != "setup":
            return self._send_and_receive(msgs)
        # One batch: Flower pushes the batch's headers, then its objects; fedgc's SuperLink
        # (flwr_internals.superlink) answers a node's poll only once its message's objects are all there.
        ids = list(self.grid.push_messages(msgs))
        self._pushed = self._first = time.perf_counter()
        if len(ids) != len(msgs) or any(i is None or i == "" for i in ids):
            refused = [k for k in range(len(msgs)) if k >= len(ids) or ids[k] in (None, "")]
            who = ", ".join(f"client {names[k]!r}" if names else f"SuperNode {nodes[k]}" for k in refused)
            raise FedGCError(f"{what}: the SuperLink did not accept the message(s) for {who}")
        slot = {mid: k for k, mid in enumerate(ids)}
        got: dict[int, Message] = {}
        errors: dict[int, Refusal] = {}
        deadline = time.monotonic() + (self._setup_timeout() if what == "setup" else self.round_timeout)
        delay = self.poll_interval
        while True:
            pending = [mid for mid in ids if slot[mid] not in got and slot[mid] not in errors]
            before = len(got)
            for msg in self.grid.pull_messages(pending):
                k = slot.get(msg.metadata.reply_to_message_id)
                if k is None:
                    continue
                if msg.has_error():
                    errors[k] = Refusal(int(msg.error.code), str(msg.error.reason))
                    continue
                if not got:
                    self._first = time.perf_counter()
                got[k] = msg
            late = [k for k in range(len(ids)) if k not in got and k not in errors]
            if not late or time.monotonic() >= deadline:
                self._last = time.perf_counter()
                return got, errors, late
            # Each empty pull costs the SuperLink a request: back off while nothing arrives, start
            # short again after a reply (the others usually follow within milliseconds).
            delay = (
                self.poll_interval if len(got) > before else min(delay * POLL_GROWTH, max(self.poll_interval, MAX_POLL))
            )
            time.sleep(delay)

    def _send_and_receive(self, msgs: list[Message]):
        """_collect through Flower's grid.send_and_receive (its own 3 s polls; for comparison)."""
        t0 = time.perf_counter()
        self._pushed = self._first = t0
        dst = [int(m.metadata.dst_node_id) for m in msgs]
        replies = list(self.grid.send_and_receive(msgs, timeout=self.round_timeout))
        self._last = time.perf_counter()
        by_node = {int(r.metadata.src_node_id): r for r in replies}
        got = {k: by_node[n] for k, n in enumerate(dst) if n in by_node and not by_node[n].has_error()}
        errors = {
            k: Refusal(int(by_node[n].error.code), str(by_node[n].error.reason))
            for k, n in enumerate(dst) if n in by_node and by_node[n].has_error()
        }  # fmt: skip
        return got, errors, [k for k, n in enumerate(dst) if n not in by_node]

    def wire_summary(self) -> dict[str, Any]:
        """Flower-serialized sizes (arrays as .npy bytes, or raw float64 bytes when compact), next to
        fedgc's payload accounting."""
        return {
            "message_format": self.message_format,
            "flower_bytes_to_clients": int(self.wire_to_clients + self.setup_to_clients),
            "flower_bytes_to_server": int(self.wire_to_server + self.setup_to_server),
            "round_latency_s": [float(s) for s in self.round_seconds],
            "median_round_latency_s": float(np.median(self.round_seconds)) if self.round_seconds else None,
            "round_timeline": self.timeline,
        }
