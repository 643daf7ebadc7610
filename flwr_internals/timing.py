"""Shorter waits inside Flower 1.41's object transfer, for rounds that take milliseconds.

A Flower message travels as a header plus content objects; the receiver of a header pulls the
objects and, when one is not there yet (the sender uploads objects after the header), retries
after 1 s, then 2 s, ... (flwr.supercore.constant.PULL_INITIAL_BACKOFF / PULL_BACKOFF_CAP).
On loopback the objects follow within milliseconds, so those retries set the round time.
`fast_object_pulls(module)` rebinds `pull_objects` in the given Flower module to the same
function with a 5 ms initial backoff capped at 50 ms (same total patience, PULL_MAX_TIME).

Used by the SuperNode launcher (flwr_internals.supernode) always, and by the ServerApp only when
its run config asks (`fast-object-pulls = true`; `fedgc --engine flower` does, `flwr run` does
not unless told): server.job.run_job.
"""

from __future__ import annotations

import functools
import importlib

INITIAL_BACKOFF = 0.005
BACKOFF_CAP = 0.05

# Flower modules whose pull loops receive fedgc's messages: the SuperNode (from the SuperLink)
# and the ServerApp's grid (replies from the SuperLink).
SUPERNODE_MODULE = "flwr.supernode.start_client_internal"
SERVERAPP_GRID_MODULE = "flwr.superlink.grid.http_grid"


def fast_object_pulls(module_name: str) -> None:
    module = importlib.import_module(module_name)
    original = getattr(module, "pull_objects", None)
    if original is None:
        raise RuntimeError(f"{module_name} has no pull_objects; flwr_internals.timing needs updating")
    if getattr(original, "_fedgc_fast", False):
        return
    fast = functools.partial(original, initial_backoff=INITIAL_BACKOFF, backoff_cap=BACKOFF_CAP)
    fast._fedgc_fast = True  # type: ignore[attr-defined]
    module.pull_objects = fast  # type: ignore[attr-defined]
