"""Process hygiene of the deployed engine: polling back-off and no orphaned processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from clients.supernode import IDLE_SLEEP, _PollClock


class _Sleeps:
    def __init__(self, monkeypatch):
        self.calls: list[float] = []
        monkeypatch.setattr("clients.supernode._time.sleep", self.calls.append)


def test_poll_clock_stays_short_during_a_run_and_backs_off_when_idle(monkeypatch):
    sleeps = _Sleeps(monkeypatch)
    clock = _PollClock(0.01, 1.0, busy=0.25, busy_for=30.0)
    clock.sleep(IDLE_SLEEP)
    assert sleeps.calls == [1.0]  # no run yet: idle interval
    clock.activity()
    for _ in range(40):
        clock.sleep(IDLE_SLEEP)
    assert sleeps.calls[1] == 0.01 and max(sleeps.calls[1:]) == pytest.approx(0.25)
    clock.last_activity = time.monotonic() - 31.0  # the run ended half a minute ago
    for _ in range(20):
        clock.sleep(IDLE_SLEEP)
    assert sleeps.calls[-1] == pytest.approx(1.0)
    clock.sleep(0.5)  # Flower's other waits (reply checks) are shortened to `local`
    assert sleeps.calls[-1] == 0.005


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes, as under some container inits, is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_deployment_processes_die_with_the_process_that_started_them(tmp_path):
    # A parent that starts a child the way LocalDeployment does, prints its pid, then is killed.
    code = (
        "import subprocess, sys, time\n"
        "from server.deploy import _die_with_parent\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True,"
        " preexec_fn=_die_with_parent)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not _alive(child):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"child {child} outlived the killed parent")
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_seconds_counts_the_deployments_processes_and_their_reaped_children(tmp_path):
    from server.deploy import LocalDeployment

    dep = LocalDeployment([], tmp_path)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    # a session leader that runs a CPU-burning child to completion, then idles
    code = f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {burn!r}])\ntime.sleep(30)\n"
    dep._start("worker", [sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while dep.cpu_seconds() < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.3 <= dep.cpu_seconds() < 5.0
    finally:
        dep.stop()
