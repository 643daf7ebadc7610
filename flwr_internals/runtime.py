"""A warm ClientApp runtime for a SuperNode in `--isolation process` mode.

    python -m flwr_internals.runtime --insecure --runtime-api-address supernode-1:9094 [--poll-interval 0.02]

It takes the place of `flower-superexec` next to a SuperNode (the app-runtime container of
Flower's compose layout; same arguments): it polls the SuperNode's Runtime API for ClientApp
tasks and runs each one *in this process* with fedgc's ClientApp (clients.app:app, from the
project folder, not from the run's FAB), using Flower's own task I/O
(pull the message and context, push the reply and the context back). `flower-superexec` starts
a new Python process per message instead, which costs seconds of imports (torch, scipy) per
round and per node; here the imports are paid once and the client's session stays cached
between rounds (the context still carries what is needed to rebuild it).

Only the fedgc app runs here: a task of another app is answered with an error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import AcquireTaskRequest, PullAppMessagesRequest, PullTaskInputRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode.runtime import run_clientapp

from clients.app import app as fedgc_client_app
from flwr_internals.supernode import IDLE_SLEEP, PollClock
from flwr_internals.timing import BACKOFF_CAP, INITIAL_BACKOFF

FEDGC_FAB_ID = "fedgc/fedgc"
READY_LINE = "fedgc ClientApp runtime polling"  # logged once the app is imported (server.local_deployment waits for it)

log = logging.getLogger("fedgc.runtime")


def runtime_retry_invoker():
    """Flower's HTTP retry policy, except for 401 Unauthorized: the request is refused (raised)
    instead of Flower's answer for a one-task process, which is to SIGINT its own process. In this
    long-lived runtime a refused task token (a task the SuperNode has closed) must end that task,
    never the runtime, or the node stops answering every later round."""
    invoker = make_simple_http_retry_invoker()
    flower_giveup = invoker.should_giveup
    if flower_giveup is None:
        raise RuntimeError(
            "flwr's HTTP retry invoker changed; flwr_internals.runtime.runtime_retry_invoker needs updating"
        )

    def giveup(exc: Exception) -> bool:
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == httpx.codes.UNAUTHORIZED:
            return True
        return flower_giveup(exc)

    invoker.should_giveup = giveup
    return invoker


def _runtime_client(
    address: str, insecure: bool, root_certificates: str | None, component: str, token: str | None = None
):
    interceptors = [RuntimeTracingInterceptor(), RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=insecure,
        root_certificates=None if insecure else validate_and_resolve_root_certificates(root_certificates, insecure),
        interceptors=interceptors,
        retry_invoker=runtime_retry_invoker(),
    )


def pull_task_input(client):
    """flwr.supernode.runtime.run_clientapp.pull_task_input with 5 ms object-pull retries: the
    SuperNode offers the task before it has the message's objects from the SuperLink."""
    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    msgs = client.PullMessages(PullAppMessagesRequest())
    if not msgs.messages_list:
        raise RuntimeError("no message for this task from the SuperNode's Runtime API")
    node = Node(node_id=context.node_id)
    tree = msgs.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message,
        initial_backoff=INITIAL_BACKOFF,
        backoff_cap=BACKOFF_CAP,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message, context, run, fab


HEARTBEAT_AFTER = 10.0  # s; a claimed task's token lives 30 s, 60 s once its input is pulled


class LateHeartbeat:
    """Flower's task heartbeat (HeartbeatSender), started only once the task has run `after`
    seconds. A fedgc task takes milliseconds and its token outlives it many times over, so the
    heartbeat Flower sends at every task's start is a request (and a thread) per node per round
    that keeps nothing alive; a task that does run long still gets its heartbeats."""

    def __init__(self, heartbeat_fn, *, after: float = HEARTBEAT_AFTER) -> None:
        self._sender = HeartbeatSender(heartbeat_fn)
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._timer = threading.Thread(target=self._start_later, args=(float(after),), daemon=True)

    def _start_later(self, after: float) -> None:
        if self._stopped.wait(after):
            return
        with self._lock:
            if not self._stopped.is_set():
                self._sender.start()

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        """No heartbeat leaves after this returns (one in flight is waited for)."""
        with self._lock:
            self._stopped.set()
            if self._sender.is_running:
                self._sender.stop()

    @property
    def started(self) -> bool:
        return self._sender.is_running


def run_task(address: str, token: str, *, insecure: bool, root_certificates: str | None, client_app) -> str:
    """One ClientApp task, as flwr-clientapp runs it, but in this process. Returns the sub-status."""
    client = _runtime_client(address, insecure, root_certificates, "flwr-clientapp", token)
    heartbeat = LateHeartbeat(make_task_heartbeat_fn_http(client))
    message = context = reply = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed"
    t0 = time.perf_counter()
    t1 = t2 = t0
    try:
        heartbeat.start()
        message, context, run, _fab = pull_task_input(client)
        t1 = time.perf_counter()
        if run.fab_id and run.fab_id != FEDGC_FAB_ID:
            raise RuntimeError(f"this runtime only runs the fedgc app ({FEDGC_FAB_ID}), not {run.fab_id!r}")
        reply = client_app(message=message, context=context)
        t2 = time.perf_counter()
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.error("ClientApp task failed: %s", reason, exc_info=exc)
        details = reason
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                run_clientapp.push_message(client, reply, context)
        finally:
            # The task output closes the task and spends its token: a heartbeat after it is refused.
            # Stop the heartbeats first.
            heartbeat.stop()
            run_clientapp.push_task_output(client, context, sub_status, details)
            client.close()
            log.info(
                "task %s: pull %.3f s, app %.3f s, push %.3f s", sub_status, t1 - t0, t2 - t1, time.perf_counter() - t2
            )
    return sub_status


def serve(
    address: str,
    *,
    insecure: bool,
    root_certificates: str | None = None,
    poll_interval: float = 0.01,
    idle_interval: float = 1.0,
    growth: float = 1.5,
    busy_interval: float = 0.25,
    busy_for: float = 30.0,
    max_tasks: int | None = None,
) -> None:
    """Poll the SuperNode for ClientApp tasks. fedgc's SuperNode (flwr_internals.supernode) holds an
    empty poll until a task is ready, so the runtime asks again at once. Against a SuperNode that
    answers at once it polls on the SuperNode's schedule (PollClock): during a run it
    learns the round period and polls shortly before the next task is due, so a task waits at most
    a few percent of a round; at a run's start it polls poll_interval after a task, backing off by
    `growth` per empty poll up to busy_interval, and up to idle_interval when no task came for
    busy_for seconds (an idle node costs one request per idle_interval)."""
    acquirer = _runtime_client(address, insecure, root_certificates, "SuperExec")
    clock = PollClock(poll_interval, idle_interval, growth=growth, busy=busy_interval, busy_for=busy_for)
    done = 0
    log.info("%s %s", READY_LINE, address)
    try:
        while max_tasks is None or done < max_tasks:
            asked = time.monotonic()
            res = acquirer.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if res.HasField("task") and res.token:
                clock.activity(res.task.run_id)
                try:
                    run_task(address, res.token, insecure=insecure, root_certificates=root_certificates,
                             client_app=fedgc_client_app)  # fmt: skip
                except Exception as exc:
                    log.error(
                        "ClientApp task of run %s could not report back: %s: %s",
                        res.task.run_id,
                        type(exc).__name__,
                        exc,
                    )
                done += 1
                continue
            clock.answered_empty(asked)
            clock.sleep(IDLE_SLEEP)
    finally:
        acquirer.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flwr_internals.runtime", description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, host:port")
    p.add_argument("--insecure", action="store_true", help="plain HTTP to the SuperNode")
    p.add_argument("--root-certificates", default=None, help="CA certificate of the SuperNode's Runtime API (TLS)")
    p.add_argument("--poll-interval", type=float, default=0.01, help="first wait after a task (backs off x1.5)")
    p.add_argument("--idle-interval", type=float, default=1.0, help="longest wait between task polls")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.insecure and not args.root_certificates:
        print("flwr_internals.runtime: give --insecure or --root-certificates", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fedgc-runtime %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Stateless worker: stop at once, even inside an HTTP retry loop.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        serve(
            args.runtime_api_address,
            insecure=args.insecure,
            root_certificates=args.root_certificates,
            poll_interval=args.poll_interval,
            idle_interval=args.idle_interval,
        )
    except KeyboardInterrupt:
        log.info("interrupted (SIGINT): the runtime stops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
