"""Everything fedgc does with Flower's PRIVATE modules, in one place, for Flower 1.41.x only.

fedgc's Flower app (clients/, server/) uses Flower's public API: flwr.app, flwr.clientapp,
flwr.serverapp, flwr.simulation. What it adds for speed and operations reaches into modules that
Flower does not promise to keep (flwr.supercore, flwr.proto, flwr.supernode.*, flwr.superlink.*,
flwr.cli, flwr.common.serde), and lives here:

    superlink.py   python -m flwr_internals.superlink: flower-superlink with held message polls
    supernode.py   python -m flwr_internals.supernode: flower-supernode with short waits, held task polls
    runtime.py     python -m flwr_internals.runtime: a warm ClientApp runtime (replaces the
                   flower-superexec next to a SuperNode, which starts a process per message)
    superexec.py   python -m flwr_internals.superexec: flower-superexec that reaps the ServerApp
                   processes it starts (no <defunct> flwr-serverapp after a run)
    timing.py      shorter object-pull retries (the SuperNode; the ServerApp when a run asks)
    control.py     the Control API calls behind `flwr run` / `flwr supernode register`, the FAB build
    heldpoll.py, launch.py   the held-poll signal and the launchers' flag parsing (no Flower imports)

Every one is an optimisation or a convenience: Flower's own programs (flower-superlink,
flower-supernode, flower-superexec) run the same app with the same result
(tests/test_stock_flower.py), only slower.

Version guard: importing this package (so any module in it) checks flwr.__version__ against
SUPPORTED and raises FlowerVersionError, naming the installed and the supported version, when
they differ in major or minor version. A launcher on another Flower never starts; the patches
themselves also check the functions they wrap and raise if those changed.
"""

from __future__ import annotations

import re

import flwr

SUPPORTED = (1, 41)  # any 1.41.x release
SUPPORTED_TEXT = "1.41.x"


class FlowerVersionError(RuntimeError):
    """The installed Flower is not the one fedgc's Flower internals were written against."""


def supported(version: str) -> bool:
    """True for a 1.41.x version string (pre-release and local suffixes included, e.g. 1.41.1rc1)."""
    match = re.match(r"(\d+)\.(\d+)(?!\d)", version)
    return match is not None and (int(match[1]), int(match[2])) == SUPPORTED


def check_flower_version(installed: str | None = None) -> None:
    """Raise FlowerVersionError unless `installed` (default: flwr.__version__) is supported."""
    installed = flwr.__version__ if installed is None else installed
    if not supported(installed):
        raise FlowerVersionError(
            f"fedgc's Flower internals (flwr_internals/: launchers, warm ClientApp runtime, Control API client) "
            f"support Flower {SUPPORTED_TEXT}, but Flower {installed} is installed. Install flwr=={SUPPORTED_TEXT[:-2]}.* "
            "(fedgc's pinned dependency), or run Flower's own programs (flower-superlink, flower-supernode, "
            "flower-superexec) without fedgc's launchers."
        )


check_flower_version()
