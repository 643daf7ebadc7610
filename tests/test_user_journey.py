"""A new user's walk through the README, as subprocesses of .venv/bin/fedgc: simulate, run on their own CSV
files, inspect, then the mistakes people make: an output folder that holds a result, an --out that is a
file, a read-only folder, Ctrl-C in the middle of a run (and --resume after it), a one-client config, a
glitch value in a CSV. Every command must end with one clear line, never a Python traceback."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fedgc.data.csv import write_client_csv
from fedgc.data.synthetic import SystemSpec, simulate

REPO = Path(__file__).resolve().parents[1]
FEDGC = REPO / ".venv" / "bin" / "fedgc"
TRACEBACK = "Traceback (most recent call last)"
SMALL_SCENARIO = """\
# the README's default scenario, small enough for a test
name: default
seed: 0
synthetic: {n_clients: 3, state_dims: 2, obs_dims: 6, n_steps: 400}
server: {max_rounds: 10}
"""
SITES = ("feed", "reactor", "separator")

pytestmark = pytest.mark.skipif(not FEDGC.is_file(), reason="needs the .venv that scripts/setup.sh creates")


def environment() -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def fedgc(home: Path, *args: str, code: int = 0, **kwargs) -> subprocess.CompletedProcess:
    """`fedgc ARGS` run in `home` as a user types it; its exit code is `code`, and no traceback shows."""
    done = subprocess.run([str(FEDGC), *args], cwd=home, capture_output=True, text=True, env=environment(),
                          timeout=600, **kwargs)  # fmt: skip
    assert TRACEBACK not in done.stdout + done.stderr, done.stderr
    assert done.returncode == code, (args, done.returncode, done.stderr)
    return done


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The error a failed command printed: exactly one line, `fedgc: error: ...`."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedgc: error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The user's folder: a scenario, and three sites' CSV files (header, ISO timestamps) with known edges."""
    home = tmp_path_factory.mktemp("user")
    (home / "small.yaml").write_text(SMALL_SCENARIO)
    data = simulate(SystemSpec(n_clients=3, state_dims=2, obs_dims=5, edge_density=0.5, n_steps=400),
                    np.random.default_rng(4))  # fmt: skip
    stamps = np.datetime64("2024-03-01T00:00") + np.arange(400) * np.timedelta64(1, "m")
    for name, y in zip(SITES, data.y, strict=True):
        write_client_csv(home / f"{name}.csv", y, columns=[f"{name}_{j}" for j in range(y.shape[1])], timestamps=stamps)
    return home


def csv_args() -> list[str]:
    return [arg for name in SITES for arg in ("--data", f"{name}.csv")]


# ---------------------------------------------------------------------------------------------- the README


def test_help_and_version_say_what_a_new_user_needs(home):
    version = fedgc(home, "--version").stdout
    assert version.startswith("fedgc ") and version.split()[1][0].isdigit()
    top = fedgc(home, "--help").stdout
    assert "examples:" in top and "fedgc run --data feed.csv" in top and "fedgc config-reference" in top
    assert "one column per sensor" in top and "timestamp" in top and "missing measurements" in top
    run = fedgc(home, "run", "--help").stdout
    assert "examples:" in run and "clients:" in run and "--overwrite" in run and "--resume" in run
    assert "one file per site" in run and "header" in run
    for command in ("simulate", "identify", "inspect", "serve"):
        assert "example" in fedgc(home, command, "--help").stdout
    reference = fedgc(home, "config-reference").stdout
    assert "evaluation.oracle" in reference and "clients" in reference


def test_simulate_then_inspect_then_overwrite(home):
    done = fedgc(home, "simulate", "small.yaml", "--out", "runs/default")
    assert "oracle " in done.stderr and "relative error vs oracle" in done.stderr  # the oracle shows its progress
    run = home / "runs" / "default"
    result = json.loads((run / "result.json").read_text())
    assert result["evaluation"]["relative_error_vs_oracle"] is not None  # `simulate` compares with the oracle

    table = fedgc(home, "inspect", "runs/default").stdout
    assert table.startswith("default: 3 clients")
    fedgc(home, "inspect", "runs/default", "--figures", "--export", "csv")
    assert (run / "inspect_graph.png").is_file() and not (run / "inspect_heatmap.png").exists()  # gc_heatmap.png is it
    fedgc(home, "inspect", "runs/default", "--alpha", "0.2", "--export", "csv")
    assert (run / "edges.alpha-0.2.csv").is_file()  # another level: its own file, edges.csv stays the run's
    piped = subprocess.run(f"{shlex.quote(str(FEDGC))} inspect runs/default --all | head -n 2", shell=True, cwd=home,
                           capture_output=True, text=True, env=environment(), timeout=300)  # fmt: skip
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 2
    assert TRACEBACK not in piped.stderr and "BrokenPipe" not in piped.stderr

    before = (run / "result.json").read_bytes()
    error = one_line_error(fedgc(home, "simulate", "small.yaml", "--out", "runs/default", code=2))
    assert "runs/default" in error and "--overwrite" in error
    assert (run / "result.json").read_bytes() == before

    done = fedgc(home, "simulate", "small.yaml", "--out", "runs/default", "--overwrite", "--seed", "1")
    assert "replaces" in done.stderr
    assert json.loads((run / "result.json").read_text())["seed"] == 1
    # the old run's inspect files went with it: nothing of another run is left beside the new result
    assert not (run / "inspect_graph.png").exists() and not (run / "edges.csv").exists()
    assert sorted(p.name for p in (home / "runs").iterdir()) == ["default"]  # no staging folder left behind


def test_run_on_csv_files_has_no_oracle(home):
    done = fedgc(home, "run", *csv_args(), "--out", "runs/plant")
    assert "oracle" not in done.stderr  # `fedgc run` pools no raw data
    result = json.loads((home / "runs" / "plant" / "result.json").read_text())
    assert result["clients"] == list(SITES) and result["evaluation"]["relative_error_vs_oracle"] is None
    assert "runs/plant/result.json" in done.stderr


# ---------------------------------------------------------------------------------------------- mistakes


def test_out_naming_a_file_is_one_line(home):
    error = one_line_error(fedgc(home, "run", *csv_args(), "--out", "feed.csv", code=2))
    assert "feed.csv" in error and "is a file" in error


def test_read_only_output_folder_fails_before_round_one(home):
    """Refused before any data is read: the folder itself, and a new subfolder of it."""
    with tempfile.TemporaryDirectory(prefix="fedgc-ro-") as tmp:  # outside pytest's 0700 base: `nobody` reaches it
        place = Path(tmp)
        os.chmod(place, 0o755)
        (place / "small.yaml").write_text(SMALL_SCENARIO)
        locked = place / "locked"
        locked.mkdir()
        os.chmod(locked, 0o555)
        as_user: list[str] = []
        if os.geteuid() == 0:  # root writes anywhere: run as nobody, to whom the folder is read-only
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv (util-linux): no folder is read-only to root")
            as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = dict(environment(), HOME=tmp, MPLCONFIGDIR=tmp)
        for out, says in ((locked, "is not writable"), (locked / "new" / "run", "cannot create output folder")):
            done = subprocess.run([*as_user, str(FEDGC), "simulate", "small.yaml", "--out", str(out)], cwd=place,
                                  capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
            assert TRACEBACK not in done.stdout + done.stderr and done.returncode == 2, done.stderr
            error = one_line_error(done)
            assert says in error and str(out) in error
            assert "round" not in done.stderr  # no round ran
        os.chmod(locked, 0o755)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_how_to_resume_and_resume_finishes(home):
    (home / "slow.yaml").write_text(
        "name: slow\nclients:\n" + "".join(f"  - {{name: {n}, data: {n}.csv}}\n" for n in SITES)
        # ~10 ms a round: enough rounds that the run is still going when this (possibly slow) reader sends Ctrl-C
        + "server: {rule: gd, learning_rate: 0.01, max_rounds: 3000, tol: 1.0e-12}\n"
    )  # fmt: skip
    # A terminal's Ctrl-C: SIGINT at its default (a shell that started this suite in the background leaves it
    # ignored, and a Python started with SIGINT ignored never raises KeyboardInterrupt)
    process = subprocess.Popen([str(FEDGC), "run", "slow.yaml", "--out", "runs/slow"], cwd=home, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_sigint)  # fmt: skip
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if line.startswith("round   3/"):
                process.send_signal(signal.SIGINT)
                break
        out, rest = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = "".join(seen) + rest
    assert TRACEBACK not in out + stderr and "KeyboardInterrupt" not in stderr, stderr
    assert process.returncode == 130
    last = stderr.strip().splitlines()[-1]
    assert [line for line in stderr.splitlines() if line.startswith("fedgc:")] == [last]  # one line
    assert last.startswith("fedgc: interrupted after round ") and "continue with: " in last
    saved = int(last.split("after round ")[1].split()[0])
    command = last.split("continue with: ")[1]
    assert 1 <= saved < 3000 and command == f"{FEDGC} run slow.yaml --resume runs/slow"

    done = subprocess.run(shlex.split(command), cwd=home, capture_output=True, text=True, env=environment(),
                          timeout=600)  # fmt: skip
    assert done.returncode == 0 and TRACEBACK not in done.stderr, done.stderr
    assert f"resumed from the checkpoint of round {saved}" in done.stderr
    result = json.loads((home / "runs" / "slow" / "result.json").read_text())
    assert result["resilience"]["resumed_from_round"] == saved and result["rounds"] > saved
    assert result["converged"] or result["rounds"] == 3000  # it went on to the end


def test_one_client_is_a_config_error(home):
    (home / "one.yaml").write_text("clients: [{name: feed, data: feed.csv}]\n")
    error = one_line_error(fedgc(home, "run", "one.yaml", "--out", "runs/one", code=2))
    assert "one.yaml" in error and "'feed'" in error and "at least two" in error
    assert not (home / "runs" / "one").exists()  # a refused run leaves no folder behind


def test_a_glitch_value_is_named_with_its_row_and_column(home):
    lines = (home / "reactor.csv").read_text().splitlines()
    cells = lines[57].split(",")
    cells[3] = "1e300"
    lines[57] = ",".join(cells)
    (home / "glitch.csv").write_text("\n".join(lines) + "\n")
    error = one_line_error(fedgc(home, "run", "--data", "feed.csv", "--data", "glitch.csv", "--out", "runs/g", code=2))
    header = lines[0].split(",")
    assert "client 'glitch'" in error and "glitch.csv" in error and "row 58" in error and repr(header[3]) in error
    assert "glitch" in error.split("glitch.csv")[1] and "empty that cell" in error


def test_warnings_are_one_plain_line(home):
    y = np.random.default_rng(0).standard_normal((400, 4))
    y[:, 3] = 2.5  # a stuck sensor
    write_client_csv(home / "stuck.csv", y, columns=["a", "b", "c", "stuck"])
    done = fedgc(home, "run", "--data", "feed.csv", "--data", "stuck.csv", "--out", "runs/stuck", "--quiet")
    warned = [line for line in done.stderr.splitlines() if "stuck" in line]
    assert warned and all(line.startswith("warning: client 'stuck'") for line in warned), done.stderr
    assert "FedGCWarning" not in done.stderr and ".py:" not in done.stderr  # no source line


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
