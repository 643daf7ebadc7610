"""Results are never lost nor mixed, and what fedgc says is honest (issue 15), in process: output folders
(refusal, --overwrite staged and swapped in, a failed run leaving the folder as it was, resume of a staged
run), atomic files (and a scan that every writer is), inspect --out, identify all-or-nothing, the oracle's
default, one-client configs, the small-sample warning, glitch values, the warnings' format and the Flower
simulation's noise. The subprocess walk-through is tests/test_user_journey.py."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedgc.app.config import RunConfig, parse_config
from fedgc.app.output_folder import STAGING_SUFFIX, OutputFolder
from fedgc.app.runner import check_run, run_local, with_oracle_decided
from fedgc.cli import INTERRUPTED, _plain_warnings, _resume_command, main
from fedgc.data.csv import read_client_csv, write_client_csv
from fedgc.data.synthetic import SystemSpec, simulate
from fedgc.errors import ConfigError, DataError, FedGCError, FedGCWarning
from fedgc.files import TEMP_MARK, ctrl_c_deferred, replacing, write_text

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "seed": 2, "synthetic": {"n_clients": 3, "state_dims": 2, "obs_dims": 6, "n_steps": 300},
        "server": {"max_rounds": 4}}  # fmt: skip


def tiny_yaml(folder: Path, **changes) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


# ---------------------------------------------------------------------------------------------- atomic files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text(tmp_path / "result.json", "old")
    with pytest.raises(KeyboardInterrupt), replacing(path) as tmp:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    with replacing(path, sync=True) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_ctrl_c_inside_a_deferred_block_lands_after_it(ctrl_c_deliverable):
    done = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the block ran to its end")
    assert done == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with ctrl_c_deferred():  # no Ctrl-C: nothing raised
        done.append("again")
    assert done[-1] == "again"


def test_ctrl_c_while_a_checkpoint_is_written_saves_that_round_whole(tmp_path, monkeypatch, capsys, ctrl_c_deliverable):
    """SIGINT inside np.savez (CI once caught one there: a half-built ZipFile printed a traceback as it was
    collected): the round's checkpoint is finished, then the run stops as on any Ctrl-C, resumable."""
    cfg = tiny_yaml(tmp_path, server={"max_rounds": 6, "tol": 1e-14, "rule": "gd", "learning_rate": 0.01})
    out = tmp_path / "out"
    calls, savez = [], np.savez

    def interrupted_savez(file, **arrays):
        calls.append(1)
        if len(calls) == 2 and "A_s" in arrays:  # round 2's checkpoint
            os.kill(os.getpid(), signal.SIGINT)
        savez(file, **arrays)

    monkeypatch.setattr(np, "savez", interrupted_savez)
    assert main(["simulate", str(cfg), "--out", str(out), "--quiet"]) == INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted after round 2 (the last one saved)" in err and "Traceback" not in err, err
    assert json.loads((out / "checkpoint.json").read_text())["round"] == 2
    monkeypatch.setattr(np, "savez", savez)
    assert main(["simulate", str(cfg), "--resume", str(out), "--quiet"]) == 0
    assert len(json.loads((out / "result.json").read_text())["history"]) == 6


# A call that writes a file, and the names it may write to: a temporary of fedgc.files.replacing (tmp), or
# a file object opened on one (f). Streams that are appended to as they go are not files replaced whole.
_WRITER = re.compile(r"\.write_text\(|\.write_bytes\(|\.savefig\(|np\.savez\w*\(|write_graphml\(|json\.dump\(|"
                     r"\bopen\([^)]*[\"'][wax]b?[\"']|\.open\([\"'][wax]")  # fmt: skip
_APPENDED = {  # the deployment's round log (a line per round, read as it grows) and the processes' own logs
    ("server/round_log.py", "self.path.write_text(\"\")"), ("server/round_log.py", "self.path.open(\"a\")"),
    ("server/local_deployment.py", "log = open("),
}  # fmt: skip


def _unsafe(code: str) -> bool:
    """A line that writes a file other than a temporary of replacing() (tmp, or a file object f on one)."""
    if not _WRITER.search(code) or code.lstrip().startswith(("def ", '"""', "_WRITERS")):
        return False
    return not (re.search(r"(\btmp\b|\(f\b|\bf,)", code) or "replacing(" in code)


def test_every_file_fedgc_writes_is_written_through_a_temporary(tmp_path):
    """grep write_text, savefig, np.savez, open(..., 'w'), ...: each writes a temporary of replacing()."""
    assert _unsafe("    path.write_text(dumps(x))") and _unsafe("    fig.savefig(path, dpi=110)")
    assert _unsafe('    with open(path, "w") as out:') and _unsafe("    np.savez(path, **arrays)")
    assert not _unsafe("    tmp.write_text(text)")
    assert not _unsafe('    with replacing(path) as tmp, open(tmp, "wb") as f:')
    offenders = []
    for folder in ("fedgc", "server", "clients", "flwr_internals"):
        for source in sorted((REPO / folder).rglob("*.py")):
            name = str(source.relative_to(REPO))
            if name == "fedgc/files.py":
                continue
            for no, line in enumerate(source.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if _unsafe(code) and not any(name == f and snippet in code for f, snippet in _APPENDED):
                    offenders.append(f"{name}:{no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ---------------------------------------------------------------------------------------------- output folders


def test_an_output_folder_that_holds_anything_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text("{}")
    with pytest.raises(FedGCError, match=r"output folder .*run is not empty \(result.json\); give --overwrite"):
        OutputFolder.open(run)
    (run / "result.json").unlink()
    (run / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(FedGCError, match=rf"holds an interrupted run .* --resume {re.escape(str(run))}"):
        OutputFolder.open(run)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file")
    with pytest.raises(FedGCError, match=r"not fedgc's output.*choose a new folder"):
        OutputFolder.open(mine, overwrite=True)  # never replaced, even with --overwrite
    with pytest.raises(FedGCError, match=r"notes\.txt: that is a file, not a folder"):
        OutputFolder.open(mine / "notes.txt")


def test_overwrite_is_staged_and_swapped_in_only_on_success(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_text(run / "result.json", "old run")
    write_text(run / "inspect_graph.png", "old figure")
    failed = OutputFolder.open(run, overwrite=True)
    assert failed.work == (tmp_path / f"run{STAGING_SUFFIX}").resolve() and failed.staged
    write_text(failed.work / "result.json", "half a new run")
    failed.abandon()  # no checkpoint: nothing to keep
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and (run / "result.json").read_text() == "old run"

    kept = OutputFolder.open(run, overwrite=True)
    write_text(kept.work / "checkpoint.npz", "round 3")
    kept.abandon()  # a checkpoint: the staging folder stays, to resume
    assert (kept.work / "checkpoint.npz").is_file() and (run / "result.json").read_text() == "old run"
    resumed = OutputFolder.open(kept.work, resume=True)  # resuming the staged run: it still replaces `run`
    assert resumed.target == run.resolve() and resumed.work == kept.work
    write_text(resumed.work / "result.json", "new run")
    resumed.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.npz", "result.json"]  # the old figure went
    assert (run / "result.json").read_text() == "new run" and resumed.final(resumed.work / "x") == run.resolve() / "x"


def test_a_failed_run_removes_only_the_folders_it_created(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    folder = OutputFolder.open(out)
    assert folder.fresh and not folder.staged and out.is_dir()
    write_text(out / "clients.csv", "written by the run")
    folder.abandon()
    assert not (tmp_path / "a").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = OutputFolder.open(empty)
    write_text(empty / "checkpoint.npz", "round 1")
    folder.abandon()  # a checkpoint to resume from is kept
    assert (empty / "checkpoint.npz").is_file()


def test_resume_command_replaces_out_and_overwrite():
    argv = ["run", "plant.yaml", "--out", "runs/x", "--overwrite", "--seed", "3", "--out=runs/y"]
    assert _resume_command(argv, Path("runs/x.fedgc-staging")).endswith(
        "run plant.yaml --seed 3 --resume runs/x.fedgc-staging"
    )
    assert _resume_command(["simulate", "my scenario.yaml", "--resume", "r"], Path("r")).endswith(
        "simulate 'my scenario.yaml' --resume r"
    )


def test_overwrite_through_the_cli_then_a_failed_overwrite(tmp_path, capsys):
    cfg = tiny_yaml(tmp_path)
    out = tmp_path / "out"
    assert main(["simulate", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert main(["simulate", str(cfg), "--out", str(out), "--quiet", "--overwrite", "--seed", "4"]) == 0
    assert json.loads((out / "result.json").read_text())["seed"] == 4
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tiny_yaml(tmp_path, engine="flower-sim", evaluation={"oracle": True})  # refused once the run starts
    capsys.readouterr()
    assert main(["simulate", str(bad), "--out", str(out), "--quiet", "--overwrite"]) == 2
    assert "oracle" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.yaml"]  # no staging folder left
    assert main(["simulate", str(cfg), "--resume", str(out), "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_inspect_out_holds_one_runs_files(tmp_path, capsys):
    cfg = tiny_yaml(tmp_path)
    for name, seed in (("a", "2"), ("b", "5")):
        assert main(["simulate", str(cfg), "--out", str(tmp_path / name), "--quiet", "--seed", seed]) == 0
    out = tmp_path / "inspected"
    assert main(["inspect", str(tmp_path / "a"), "--export", "csv", "--out", str(out)]) == 0
    assert main(["inspect", str(tmp_path / "a"), "--export", "dot", "--out", str(out)]) == 0  # same run: added to
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "b"), "--export", "csv", "--out", str(out)]) == 2  # another run: refused
    assert f"output folder {out} is not empty" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "b"), "--export", "csv", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".fedgc-inspect", "edges.csv"]  # b's files only
    assert str(tmp_path / "b") in (out / ".fedgc-inspect").read_text()


def test_identify_with_a_config_replaces_no_file_unless_every_model_is_identified(tmp_path, capsys):
    data = simulate(SystemSpec(n_clients=2, state_dims=2, obs_dims=5, n_steps=300), np.random.default_rng(3))
    for m, y in enumerate(data.y):
        write_client_csv(tmp_path / f"c{m}.csv", y, columns=[f"x{j}" for j in range(5)])
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(yaml.safe_dump({"clients": [{"name": f"c{m}", "data": f"c{m}.csv"} for m in range(2)]}))
    models = tmp_path / "models"
    assert main(["identify", str(cfg), "--out", str(models)]) == 0
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    assert sorted(before) == ["c0.npz", "c1.npz"]
    assert main(["identify", str(cfg), "--out", str(models)]) == 2 and "--overwrite" in capsys.readouterr().err
    (tmp_path / "c1.csv").write_text("x0,x1\n1,2\n3,oops\n")
    assert main(["identify", str(cfg), "--out", str(models), "--overwrite"]) == 2
    assert "client 'c1'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before  # c0's model was not replaced either


# ---------------------------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize(
    "engine, mode, asked, decided",
    [("local", "simulate", None, True), ("local", "run", None, False), ("local", "run", True, True),
     ("local", "simulate", False, False), ("flower-sim", "simulate", None, False), ("flower", "run", None, False),
     ("flower-sim", "simulate", False, False)],
)  # fmt: skip
def test_the_oracle_is_on_for_local_simulations_only_by_default(engine, mode, asked, decided):
    cfg = parse_config({**TINY, "engine": engine, "evaluation": {"oracle": asked}})
    assert with_oracle_decided(cfg, mode=mode).evaluation.oracle is decided


@pytest.mark.parametrize("engine", ["flower-sim", "flower"])
def test_asking_for_the_oracle_on_a_flower_engine_is_a_config_error(engine):
    cfg = parse_config({**TINY, "engine": engine, "evaluation": {"oracle": True}})
    with pytest.raises(ConfigError, match=rf"evaluation.oracle pools .* \(engine '{engine}'.*remove `oracle: true`"):
        with_oracle_decided(cfg, mode="simulate")


# ---------------------------------------------------------------------------------------------- honest output


def test_a_config_of_one_client_is_refused_before_any_data_is_read(tmp_path):
    cfg = parse_config({"clients": [{"name": "feed", "data": "nowhere.csv"}]}, source=tmp_path / "one.yaml")
    with pytest.raises(ConfigError, match=r"one.yaml: clients: one client \('feed'\).*needs at least two"):
        check_run(cfg, mode="run", resume=False)


def test_few_samples_per_coefficient_warn_once_with_the_numbers():
    small = parse_config({**TINY, "synthetic": {**TINY["synthetic"], "n_steps": 40}, "evaluation": {"oracle": False}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_local(small, mode="simulate", out_dir=None)
    said = [str(w.message) for w in caught if issubclass(w.category, FedGCWarning)]
    assert len(said) == 1, said
    assert "39 time steps (T = 40, burn-in 1) for 4 coefficients per equation (3 clients, 6 states" in said[0]
    assert "9.8 samples per coefficient (under 10)" in said[0] and "T >= 41" in said[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_local(parse_config({**TINY, "evaluation": {"oracle": False}}), mode="simulate", out_dir=None)
    assert not [w for w in caught if issubclass(w.category, FedGCWarning)]


def test_a_glitch_is_named_and_a_column_in_wrong_units_is_told_to_rescale(tmp_path):
    y = np.random.default_rng(0).standard_normal((300, 3))
    y[120, 1] = 1e300
    write_client_csv(tmp_path / "feed.csv", y, columns=["a", "b", "c"])
    with pytest.raises(DataError) as info:
        read_client_csv(tmp_path / "feed.csv", client="feed")
    text = str(info.value)
    assert text.startswith(f"client 'feed': data file '{tmp_path / 'feed.csv'}': row 122, column 'b': value 1e+300")
    assert "looks like a glitch" in text and "empty that cell" in text and "rescale" not in text
    y[:, 1] = 1e300 * np.sign(y[:, 0])  # every value: the column is in the wrong units, not glitched
    write_client_csv(tmp_path / "units.csv", y, columns=["a", "b", "c"])
    with pytest.raises(DataError, match=r"column 'b' holds values up to 1e\+300 .* rescale the column"):
        read_client_csv(tmp_path / "units.csv", client="units")


def test_fedgc_warnings_print_as_one_plain_line():
    with _plain_warnings():
        plain = warnings.formatwarning(FedGCWarning("client 'a': dropped 'x'"), FedGCWarning, "/x/clients.py", 3)
        other = warnings.formatwarning(UserWarning("other"), UserWarning, "/x/y.py", 7)
    assert plain == "warning: client 'a': dropped 'x'\n"
    assert other.startswith("/x/y.py:7: UserWarning: other")


def test_flower_simulation_hides_only_the_notices_meant_for_its_caller():
    pytest.importorskip("flwr")
    from flwr.supercore.logger import warn_deprecated_feature

    from server.engine import _quiet_simulation

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    flwr = logging.getLogger("flwr")
    flwr.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with _quiet_simulation():
                warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed")
                warn_deprecated_feature("The `other_thing` function is deprecated")
                warnings.warn("Tip: In future versions of Ray, Ray will no longer override accelerator visible "
                              "devices env var if num_gpus=0", FutureWarning, stacklevel=1)  # fmt: skip
                warnings.warn("another future change", FutureWarning, stacklevel=1)
            warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed")
    finally:
        flwr.removeHandler(handler)
    assert ["other_thing" in s for s in seen] == [True, False]  # run_simulation's notice: only outside
    assert [str(w.message) for w in caught] == ["another future change"]


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("fedgc ")
    for command in ([], ["run"], ["simulate"], ["inspect"], ["identify"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert "example" in text, command
    assert main(["config-reference"]) == 0
    assert "| evaluation.oracle |" in capsys.readouterr().out.replace("`", "")


def test_no_temporary_file_is_left_by_a_run(tmp_path):
    assert main(["simulate", str(tiny_yaml(tmp_path)), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert not [p for p in tmp_path.rglob("*") if TEMP_MARK in p.name or "probe" in p.name]


def test_run_config_default_is_auto():
    assert RunConfig().evaluation.oracle is None


def test_the_help_config_example_is_a_valid_config():
    from fedgc.cli import CONFIG_EXAMPLE

    example = yaml.safe_load(CONFIG_EXAMPLE.split("\n", 2)[2])
    cfg = parse_config(example)
    assert [c.name for c in cfg.clients] == ["feed", "reactor", "separator"] and cfg.clients[1].state_dim == 3
