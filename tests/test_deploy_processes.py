"""Process hygiene of the deployed engine: polling back-off and no orphaned processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flwr_internals.supernode import IDLE_SLEEP, PollClock

ROOT = Path(__file__).resolve().parent.parent


class _Sleeps:
    def __init__(self, monkeypatch):
        self.calls: list[float] = []
        monkeypatch.setattr("flwr_internals.supernode._time.sleep", self.calls.append)


def test_poll_clock_stays_short_during_a_run_and_backs_off_when_idle(monkeypatch):
    sleeps = _Sleeps(monkeypatch)
    clock = PollClock(0.01, 1.0, busy=0.25, busy_for=30.0)
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


class _FakeTime:
    """A monotonic clock that sleeping advances (patched into flwr_internals.supernode)."""

    def __init__(self, monkeypatch):
        self.now, self.sleeps = 100.0, []
        monkeypatch.setattr("flwr_internals.supernode._time.monotonic", lambda: self.now)
        monkeypatch.setattr("flwr_internals.supernode._time.sleep", self.sleep)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _polls_until(clock: PollClock, fake: _FakeTime, arrival: float, run_id: int = 1) -> int:
    """Flower's loop: poll, and on an empty poll sleep IDLE_SLEEP; returns the polls a message
    arriving at `arrival` costs (the last one gets it) and records the message."""
    polls = 0
    while True:
        polls += 1
        if fake.now >= arrival:
            clock.activity(run_id)
            return polls
        clock.sleep(IDLE_SLEEP)


def _run(clock, fake, gaps, run_id=1):
    arrival, polls, late = fake.now, [], []
    for gap in gaps:
        polls.append(_polls_until(clock, fake, arrival, run_id))
        late.append(fake.now - arrival)
        arrival += gap
    return polls, late


def test_poll_clock_learns_the_round_period(monkeypatch):
    """Rounds every 1.5 s: once the period is known a node polls a handful of times per round
    (from 0.85 P on, every 0.04 P) instead of ramping up from 10 ms each round, and sees each
    message within 0.04 P of its arrival; a pause (between runs) or a long setup exchange does
    not make it late for the rounds after."""
    fake = _FakeTime(monkeypatch)
    clock = PollClock(0.01, 1.0, busy=0.25, busy_for=30.0)
    period = 1.5
    gaps = [period] * 12 + [8.0, 2.5] + [period] * 8
    polls, late = _run(clock, fake, gaps)
    assert polls[1] >= 10  # the first gap: no period known yet, polls ramp up from 10 ms
    regular = [k for k in range(3, len(gaps)) if k not in (13, 14)]  # after the pause and the long exchange
    assert max(polls[k] for k in regular) <= 8  # (ramping up from 10 ms: 14 per round)
    assert max(late[k] for k in regular) <= 0.04 * period + 1e-9
    # a round that comes early is still seen, at most lead * P after the message before it
    arrival = fake.now + 0.3
    _polls_until(clock, fake, arrival)
    assert fake.now - arrival <= 0.85 * period


def test_poll_clock_forgets_other_runs_and_catches_up_when_rounds_get_faster(monkeypatch):
    fake = _FakeTime(monkeypatch)
    clock = PollClock(0.01, 1.0, busy=0.25, busy_for=30.0)
    _run(clock, fake, [4.0] * 8, run_id=1)  # a slow run (e.g. send_and_receive's 3 s sleeps)
    fake.now += 5.0
    # the next run: a long setup exchange, then 1 s rounds; nothing of the last run's 4 s period is used
    polls, late = _run(clock, fake, [3.0] + [1.0] * 10, run_id=2)
    assert max(late[1:]) <= 0.25  # ramp polls (<= 0.25 s apart) until the run's own period is known
    assert max(late[4:]) <= 0.04 + 1e-9 and max(polls[4:]) <= 9
    # within a run the rounds halve in length: one round is late, the next ones are polled without
    # the silent wait (as at a run's start) until the new period is measured, then on time again
    polls, late = _run(clock, fake, [2.0] * 6 + [1.0] * 8, run_id=3)
    assert late[6] <= 0.04 * 2.0 + 1e-9 and late[7] <= 0.85 * 2.0
    assert max(late[8:]) <= 0.25 and max(late[12:]) <= 0.04 + 1e-9


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
        "from server.local_deployment import _die_with_parent\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True,"
        " preexec_fn=_die_with_parent)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
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
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_seconds_counts_the_deployments_processes_and_their_reaped_children(tmp_path):
    from server.local_deployment import LocalDeployment

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


def test_run_status_waits_long_while_running_and_short_once_the_output_is_written(tmp_path, monkeypatch):
    """The launcher polls the SuperLink's run status every second during a run (each poll is a
    request the SuperLink serves between round messages) but looks at the output folder every
    20 ms, so the end of a run on this machine is seen within a status poll of 0.1 s."""
    import threading

    from server import engine
    from server.job import RUN_FILE

    t0 = time.monotonic()
    engine._sleep_until_output(tmp_path, 0.3)
    assert 0.3 <= time.monotonic() - t0 < 0.6  # nothing written: the whole wait
    threading.Timer(0.1, (tmp_path / RUN_FILE).write_text, args=("{}",)).start()
    t0 = time.monotonic()
    engine._sleep_until_output(tmp_path, 5.0)
    assert time.monotonic() - t0 < 1.0  # the ServerApp's last file: back to short polls
    t0 = time.monotonic()
    engine._sleep_until_output(None, 0.2)  # output folder not visible here: the plain wait
    assert time.monotonic() - t0 >= 0.2
