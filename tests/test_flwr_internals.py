"""The layers around Flower: fedgc never imports Flower or the app; the app (clients/, server/) uses
Flower's public API only and reaches flwr_internals/ only where documented; flwr_internals/ refuses
any Flower but 1.41.x; the SuperExec launcher reaps the processes it starts."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

import flwr_internals
from flwr_internals import FlowerVersionError, check_flower_version

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_FLOWER = ("flwr.app", "flwr.clientapp", "flwr.serverapp", "flwr.simulation")
# Modules of the app that may import flwr_internals, and why (the thin apps are not among them):
INTERNALS_USERS = {
    "server/job.py": "opt-in fast-object-pulls, imported inside run_job only when the run config asks",
    "server/engine.py": "the deployed engine submits runs through the Control API (what `flwr run` does)",
    "server/deploy.py": "`python -m server.deploy register` registers SuperNode keys through the Control API",
    "server/local_deployment.py": "starts fedgc's launchers and waits for the warm runtime",
}


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_library_imports_neither_flower_nor_the_app():
    for path in _modules("fedgc"):
        bad = {m for m in _imports(path) if _under(m, "flwr", "clients", "server", "flwr_internals")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("folder", ["clients", "server"])
def test_the_app_uses_only_flowers_public_api(folder):
    for path in _modules(folder):
        private = {m for m in _imports(path) if _under(m, "flwr") and not _under(m, *PUBLIC_FLOWER)}
        assert not private, f"{path.relative_to(ROOT)} imports Flower's private {private}: move that to flwr_internals/"


def test_only_documented_modules_reach_the_internals_and_the_thin_apps_do_not():
    users = {
        str(path.relative_to(ROOT)) for folder in ("clients", "server") for path in _modules(folder)
        if any(_under(m, "flwr_internals") for m in _imports(path))
    }  # fmt: skip
    assert users == set(INTERNALS_USERS)
    # the ServerApp's module-level imports, transitively, never load flwr_internals (run_job's is opt-in)
    seen, todo = set(), ["server.app", "clients.app"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.is_file():
            continue
        for imported in _imports(path, top_level_only=True):
            assert not _under(imported, "flwr_internals"), f"{name} imports {imported}"
            if _under(imported, "clients", "server"):
                todo.append(imported)
    assert "server.job" in seen and "clients.records" in seen


@pytest.mark.parametrize("version", ["1.41.0", "1.41.3", "1.41.1rc2", "1.41.0.dev20250101"])
def test_supported_versions_pass(version):
    check_flower_version(version)


@pytest.mark.parametrize("version", ["1.42.0", "1.40.9", "2.41.0", "1.410.0", "nightly"])
def test_other_versions_are_refused_naming_both(version):
    with pytest.raises(FlowerVersionError) as err:
        check_flower_version(version)
    assert f"Flower {version} is installed" in str(err.value) and "1.41.x" in str(err.value)


@pytest.mark.parametrize("module", ["flwr_internals.superlink", "flwr_internals.supernode", "flwr_internals.superexec",
                                    "flwr_internals.runtime", "flwr_internals.control"])  # fmt: skip
def test_a_launcher_on_another_flower_fails_before_it_starts(module):
    """`python -m <module>` under Flower 1.42: the package's guard raises before the module's code runs."""
    code = f"import runpy, flwr\nflwr.__version__ = '1.42.0'\nrunpy.run_module({module!r}, run_name='__main__')\n"
    done = subprocess.run(
        [sys.executable, "-c", code, "--insecure"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert (
        "FlowerVersionError" in done.stderr and "Flower 1.42.0 is installed" in done.stderr and "1.41.x" in done.stderr
    )
    assert "Starting Flower" not in done.stdout + done.stderr


def test_the_installed_flower_is_supported():
    import flwr

    assert flwr_internals.supported(flwr.__version__)


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_superexec_reaps_the_task_process_it_launched(monkeypatch):
    """Flower's SubprocessExecutor.launch drops its Popen: the finished task stays a zombie. With the
    launcher's patch, the next reconcile() (the SuperExec loop's, before every task poll) reaps it."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import subprocess_executor
    from flwr.supercore.superexec.executor.types import ExecutionSpec

    from flwr_internals.superexec import reap_task_processes

    executor_class = subprocess_executor.SubprocessExecutor
    monkeypatch.setattr(subprocess_executor, "subprocess", subprocess_executor.subprocess)  # restored after
    monkeypatch.setattr(executor_class, "reconcile", executor_class.reconcile)
    monkeypatch.setitem(subprocess_executor.TASK_TYPE_TO_COMMAND, TaskType.SERVER_APP, "/bin/true")  # exits at once
    processes = reap_task_processes()
    executor = executor_class()
    spec = ExecutionSpec(TaskType.SERVER_APP, "127.0.0.1:1", "token", True, None, False, None, True, 1)
    executor.launch(spec)
    [proc] = processes.running
    deadline = time.monotonic() + 10
    while _state(proc.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _state(proc.pid) == "Z"  # finished, not reaped: what stock flower-superexec leaves behind
    executor.reconcile()
    assert _state(proc.pid) is None and processes.running == []


def test_superexec_launcher_refuses_a_changed_executor(monkeypatch):
    from flwr.supercore.superexec.executor import subprocess_executor

    from flwr_internals.superexec import reap_task_processes

    monkeypatch.delattr(subprocess_executor.SubprocessExecutor, "reconcile")
    with pytest.raises(RuntimeError, match=r"flwr_internals.superexec needs updating"):
        reap_task_processes()


def test_the_node_unavailable_code_is_flowers():
    from flwr.common.constant import ErrorCode

    from server.transport import NODE_UNAVAILABLE

    assert NODE_UNAVAILABLE == ErrorCode.NODE_UNAVAILABLE
