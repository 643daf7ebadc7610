"""A new user's loopback deployment, with the command lines of docs/deployment.md ("Without Docker") as
they are written there: prepare the clients' files, start the SuperLink, the SuperExec and per client a
SuperNode and its runtime, submit with `fedgc run`. Then a node dies mid-run, the user sees one line
naming its client (no traceback), starts the node again with its same command lines and resumes with
`--resume`: the run finishes with every client and the A_s of an uninterrupted run.

Only what a test must change is changed: the small scenario instead of simulations/default.yaml, a
temporary folder instead of deploy/data and runs/, free ports instead of 8000/9094/9095, and the
program paths of the project's virtual environment (what `source .venv/bin/activate` puts first on PATH).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.app.checkpoint import CHECKPOINT_FILE

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECTION = re.search(r"## Without Docker\n(.*?)\n## ", (ROOT / "docs" / "deployment.md").read_text(), flags=re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _documented_lines() -> list[str]:
    """The first bash block of the section, as command lines (continuations joined, comments dropped)."""
    assert SECTION is not None, "docs/deployment.md has no 'Without Docker' section"
    block = re.search(r"```bash\n(.*?)```", SECTION.group(1), flags=re.S)
    assert block is not None
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [re.sub(r"\s+", " ", line).strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class Walkthrough:
    """The documented commands, adapted to this test (see the module docstring), and the processes they start."""

    def __init__(self, tmp: Path, scenario: Path):
        self.tmp, self.data, self.procs = tmp, tmp / "data", {}
        lines = _documented_lines()
        self.ports = {"8000": str(_free_port())}
        node_lines = [line for line in lines if "client0" in line or "9094" in line]
        assert len(node_lines) == 2, "the section shows client0's SuperNode and its runtime"
        self.prepare = self._adapt(next(line for line in lines if "server.deploy prepare" in line), scenario)
        self.link = [self._adapt(line, scenario) for line in lines if "flwr_internals.superlink" in line
                     or "flwr_internals.superexec" in line]  # fmt: skip
        self.node_template = node_lines
        self.submit = self._adapt(next(line for line in lines if line.startswith("fedgc run")), scenario)
        assert len(self.link) == 2 and self.prepare and self.submit

    def _adapt(self, line: str, scenario: Path) -> str:
        line = line.replace("simulations/default.yaml", str(scenario))
        line = line.replace("$PWD/deploy/data", str(self.data)).replace("deploy/data", str(self.data))
        line = line.replace("$PWD/runs/x", str(self.tmp / "out"))
        for documented, free in self.ports.items():
            line = line.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{free}").replace(
                f"--port {documented}", f"--port {free}"
            )
        line = re.sub(r"^python ", f"{BIN / 'python'} ", line)
        return re.sub(r"^fedgc ", f"{BIN / 'fedgc'} ", line)

    def node_lines(self, i: int, scenario: Path) -> list[str]:
        self.ports.setdefault(f"node{i}", str(_free_port()))
        out = []
        for line in self.node_template:
            line = line.replace("client0", f"client{i}").replace("9094", self.ports[f"node{i}"])
            out.append(self._adapt(line, scenario))
        return out

    def env(self) -> dict[str, str]:
        env = dict(os.environ)  # what `source .venv/bin/activate` does: the venv's programs first
        env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(BIN.parent)
        env["FLWR_HOME"] = str(self.tmp / "flwr-home")
        env["FLWR_TELEMETRY_ENABLED"] = "0"
        return env

    def shell(self, line: str, *, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", line], cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def start(self, name: str, line: str) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed below, the process keeps its copy
        self.procs[name] = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=ROOT, env=self.env(), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        log.close()

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name in list(self.procs):
            try:
                self.procs[name].wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(self.procs[name].pid, signal.SIGKILL)
            self.procs.pop(name).wait(timeout=10)


def _no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, text


def test_the_documented_deployment_survives_a_killed_node_and_resumes(tmp_path):
    n_clients = 3
    scenario = tmp_path / "plant.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "plant", "seed": 4,
        "synthetic": {"n_clients": n_clients, "state_dims": 2, "obs_dims": 6, "n_steps": 400, "edge_density": 0.5},
        "server": {"max_rounds": 6, "tol": 1.0e-300},  # every round runs: there is a round to kill a node in
    }))  # fmt: skip
    walk = Walkthrough(tmp_path, scenario)
    prepared = walk.shell(walk.prepare)
    assert prepared.returncode == 0, prepared.stderr
    _no_traceback(prepared.stdout + prepared.stderr)
    run_yaml = walk.data / "run.yaml"
    assert run_yaml.is_file() and len(yaml.safe_load(run_yaml.read_text())["clients"]) == n_clients
    try:
        walk.start("superlink", walk.link[0])
        walk.start("superexec", walk.link[1])
        for i in range(n_clients):
            supernode, runtime = walk.node_lines(i, scenario)
            walk.start(f"supernode{i}", supernode)
            walk.start(f"runtime{i}", runtime)
        out = tmp_path / "out"
        first = subprocess.Popen(["bash", "-c", walk.submit + " --round-timeout 10"], cwd=ROOT, env=walk.env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 300
        while not (out / CHECKPOINT_FILE).is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / CHECKPOINT_FILE).is_file(), first.communicate(timeout=60)
        walk.kill("runtime2")
        walk.kill("supernode2")
        stdout, stderr = first.communicate(timeout=300)
        assert first.returncode == 2, (stdout, stderr)
        _no_traceback(stdout + stderr)
        error = [line for line in stderr.splitlines() if line.startswith("fedgc: error")]
        assert len(error) == 1 and "'client2'" in error[0], stderr

        supernode, runtime = walk.node_lines(2, scenario)  # the same command lines, started again
        walk.start("supernode2", supernode)
        walk.start("runtime2", runtime)
        resume = re.sub(r"--out \S+", f"--resume {out}", walk.submit)
        resumed = walk.shell(resume, timeout=600)
        assert resumed.returncode == 0, resumed.stderr
        _no_traceback(resumed.stdout + resumed.stderr)
    finally:
        walk.stop_all()
    result = json.loads((out / "result.json").read_text())
    assert result["rounds"] == 6 and result["resilience"]["resumed_from_round"] >= 1
    assert not result["resilience"]["dropouts"]
    # the uninterrupted run, on the local engine, from the same prepared files
    local = walk.shell(f"{BIN / 'fedgc'} run {run_yaml} --engine local --out {tmp_path / 'local'} --quiet")
    assert local.returncode == 0, local.stderr
    reference = json.loads((tmp_path / "local" / "result.json").read_text())
    np.testing.assert_allclose(
        np.array(result["A_s"], dtype=float), np.array(reference["A_s"], dtype=float), rtol=0, atol=1e-9
    )
