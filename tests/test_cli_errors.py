"""Every user path of the command line ends in a result or one clear line (issue 14).

Each failure a user can cause is exit status 2 with one line on stderr naming the file, column or
flag, no traceback, nothing half-written and an existing run folder left as it was. The CLI runs
in-process (``main([...])``); training runs use SMOTE (no training) or a tiny TabDDPM.
"""

import hashlib
import shutil
import signal
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax import cli
from tabdiff_jax.cli import main
from tabdiff_jax.errors import ConfigError, DataError


def _table(n=80, seed=0) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    return pd.DataFrame({"a": r.normal(size=n), "b": r.integers(0, 50, n), "c": r.choice(["x", "y", "z"], n),
                         "label": r.choice(["p", "q"], n)})


@pytest.fixture
def table(tmp_path) -> Path:
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def smote_run(tmp_path_factory) -> Path:
    """A finished SMOTE run folder (copy it before changing it)."""
    base = tmp_path_factory.mktemp("smote")
    _table().to_csv(base / "t.csv", index=False)
    assert main(["fit", str(base / "t.csv"), "--model", "smote", "--target", "label", "--out", str(base / "run")]) == 0
    return base / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def default_sigint():
    """Ctrl-C handled as in an interactive shell: a job that a non-interactive shell starts in the
    background (`cmd &` in a CI script) inherits SIGINT ignored, and then no KeyboardInterrupt is raised."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _fails(capsys, *argv, code=2) -> str:
    """Run the CLI; assert it failed with ``code`` and exactly one line, no traceback; return the line."""
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err


TINY_TABDDPM = ["--option", "d_layers=[16]", "--option", "dim_t=16", "--option", "num_timesteps=10",
                "--batch-size", "32"]


def _tiny_tabddpm_options():
    from tabdiff_jax.models import tabddpm

    name = "hidden_dims" if "hidden_dims" in tabddpm.TABDDPM_DEFAULTS else "d_layers"
    return [w.replace("d_layers", name) for w in TINY_TABDDPM]


# ------------------------------------------------------------------------- corrupt run folders
@pytest.mark.parametrize("name", ["state.npz", "model.json"])
def test_truncated_run_file_is_one_line_naming_it(capsys, smote_run, tmp_path, name):
    run = _copy(smote_run, tmp_path)
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 3])
    err = _fails(capsys, "sample", run, "-n", 5, "-o", tmp_path / "o.csv")
    assert f"{run / name}: corrupt or truncated" in err
    assert not (tmp_path / "o.csv").exists()


def test_missing_state_is_one_line_naming_it(capsys, smote_run, tmp_path):
    run = _copy(smote_run, tmp_path)
    (run / "state.npz").unlink()
    err = _fails(capsys, "sample", run, "-n", 5, "-o", tmp_path / "o.csv")
    assert f"{run / 'state.npz'}: missing" in err and "Errno" not in err


# ------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device, expected", [("tpu", "JAX has no tpu device"), ("gpu", "JAX has no gpu device"),
                                              ("banana", "unknown device")])
def test_unavailable_or_unknown_device(capsys, table, tmp_path, device, expected):
    import jax

    if device != "banana":
        try:
            jax.devices(device)
            pytest.skip(f"this machine has a {device}")
        except RuntimeError:
            pass
    err = _fails(capsys, "fit", table, "--model", "smote", "--out", tmp_path / "r", "--device", device)
    assert f"--device {device!r}" in err if device == "banana" else f"--device {device}:" in err
    assert expected in err and "rocm" not in err
    assert not (tmp_path / "r").exists()
    assert jax.numpy.ones(2).sum() == 2  # JAX still works in this process


# ---------------------------------------------------------------------------------- run folders
def test_out_is_an_existing_file(capsys, table):
    before = table.read_bytes()
    err = _fails(capsys, "fit", table, "--model", "smote", "--out", table)
    assert f"--out {table}: is a file" in err
    assert table.read_bytes() == before


def test_fit_into_an_existing_run_is_refused_before_training(capsys, smote_run, table, tmp_path, monkeypatch):
    run = _copy(smote_run, tmp_path)
    before = _snapshot(run)
    from tabdiff_jax.datasets import resolve_table

    monkeypatch.setattr("tabdiff_jax.datasets.resolve_table", lambda *a: pytest.fail("read the table first"))
    err = _fails(capsys, "fit", table, "--model", "smote", "--out", run)
    assert "holds a run already" in err and "--overwrite" in err and "--resume" in err
    assert _snapshot(run) == before
    monkeypatch.setattr("tabdiff_jax.datasets.resolve_table", resolve_table)
    assert main(["fit", str(table), "--model", "smote", "--target", "c", "--out", str(run), "--overwrite"]) == 0
    assert __import__("json").loads((run / "run.json").read_text())["target"] == "c"


def test_overwrite_refuses_a_folder_that_is_not_a_run(capsys, table, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    err = _fails(capsys, "fit", table, "--model", "smote", "--out", folder, "--overwrite")
    assert "is not a run folder" in err and "thesis.tex" in err
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize("change, expected", [("rows", "table rows 80 -> 60"), ("values", "table contents"),
                                              ("model", "model smote -> tabddpm"), ("target", 'target "label" -> "c"')])
def test_resume_against_a_different_table_or_model_names_it(capsys, smote_run, table, tmp_path, change, expected):
    run = _copy(smote_run, tmp_path)
    before = _snapshot(run)
    other = tmp_path / "other.csv"
    df = _table()
    if change == "rows":
        df = df.iloc[:60]
    elif change == "values":
        df = _table(seed=1)
    df.to_csv(other, index=False)
    model = "tabddpm" if change == "model" else "smote"
    target = "c" if change == "target" else "label"
    err = _fails(capsys, "fit", other, "--model", model, "--target", target, "--out", run, "--resume")
    assert f"--resume: {run} was started with a different setup: {expected}" in err
    assert _snapshot(run) == before


def test_resume_with_nothing_to_resume(capsys, table, tmp_path):
    err = _fails(capsys, "fit", table, "--model", "smote", "--out", tmp_path / "new", "--resume")
    assert "holds no run to resume" in err
    assert not (tmp_path / "new").exists()


def test_a_failed_fit_leaves_nothing_behind(capsys, table, tmp_path):
    err = _fails(capsys, "fit", table, "--model", "tabddpm", "--target", "label", "--out", tmp_path / "r",
                 "--column-kind", "c=banana")
    assert "column_kinds['c']" in err and "--column-kind" in err
    assert not (tmp_path / "r").exists()


# -------------------------------------------------------------------- Ctrl-C and resume (acceptance)
def test_interrupted_fit_resumes_to_the_uninterrupted_parameters(capsys, table, tmp_path, monkeypatch, default_sigint):
    """Ctrl-C (a real SIGINT) after step 3 of 6, long before the first step checkpoint (every 1000):
    the CLI saves step 3, says how to resume in one line, and the resumed run ends with exactly the
    parameters of an uninterrupted run. A time-interval checkpoint (checkpoint_seconds) is kept too."""
    import os

    from tabdiff_jax import training
    from tabdiff_jax.runs import checkpoint_steps

    tiny = _tiny_tabddpm_options()
    args = ["fit", str(table), "--model", "tabddpm", "--target", "label", "--steps", "6", "--no-progress", *tiny]
    assert main([*args, "--out", str(tmp_path / "straight"), "--option", "checkpoint_seconds=0"]) == 0
    assert checkpoint_steps(tmp_path / "straight") == [4, 5, 6]  # every step saved (by time), 3 kept

    real_bar = training.progress_bar

    class CtrlCAfter3:
        def __init__(self, *a):
            self.bar, self.n = real_bar(*a), 0

        def update(self, n):
            self.n += n
            if self.n == 3:
                os.kill(os.getpid(), signal.SIGINT)

        def __getattr__(self, name):
            return getattr(self.bar, name)

    monkeypatch.setattr(training, "progress_bar", CtrlCAfter3)
    run = tmp_path / "run"
    capsys.readouterr()
    err = _fails(capsys, *args, "--out", run, code=130)
    assert f"interrupted at step 3 of 6; saved at step 3 in {run / 'checkpoints'}" in err
    assert "continue with: tabdiff-jax fit" in err and err.rstrip().endswith("--resume")
    assert checkpoint_steps(run) == [3] and not (run / "model.json").exists()
    monkeypatch.setattr(training, "progress_bar", real_bar)

    assert main([*args, "--out", str(run), "--resume"]) == 0
    assert checkpoint_steps(run)[-1] == 6
    from tabdiff_jax.runs import read_run_npz

    straight, resumed = read_run_npz(tmp_path / "straight" / "state.npz"), read_run_npz(run / "state.npz")
    assert sorted(straight) == sorted(resumed) and straight
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


def test_ctrl_c_before_the_first_step_leaves_nothing_to_resume(capsys, table, tmp_path, monkeypatch, default_sigint):
    import os

    from tabdiff_jax import training

    def ctrl_c(*a):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(training, "progress_bar", ctrl_c)
    run = tmp_path / "run"
    args = ["fit", table, "--model", "tabddpm", "--target", "label", "--steps", "6", "--out", run,
            *_tiny_tabddpm_options()]
    err = _fails(capsys, *args, code=130)
    assert "interrupted at step 0 of 6; nothing was saved" in err
    assert not run.exists()  # no empty checkpoints/ or resume record behind
    err = _fails(capsys, *args, "--resume")
    assert "holds no run to resume" in err


# ---------------------------------------------------------------------------------------- sample
def test_sample_output_suffix_is_checked_before_sampling(capsys, smote_run, tmp_path, monkeypatch):
    monkeypatch.setattr("tabdiff_jax.models.base.Synthesizer.sample", lambda *a, **k: pytest.fail("sampled"))
    err = _fails(capsys, "sample", smote_run, "-n", 5, "-o", tmp_path / "out.txt")
    assert f"-o {tmp_path / 'out.txt'}: unsupported file type .txt" in err
    assert not (tmp_path / "out.txt").exists()


def test_sample_condition_ends_in_rows_or_one_line(capsys, smote_run, tmp_path):
    err = _fails(capsys, "sample", smote_run, "-n", 5, "-o", tmp_path / "o.csv", "--condition", "nosuch=1")
    assert "nosuch" in err and not (tmp_path / "o.csv").exists()
    code = main(["sample", str(smote_run), "-n", "5", "-o", str(tmp_path / "o.csv"), "--condition", "c=x"])
    _, err = capsys.readouterr()
    assert (code == 0 and set(pd.read_csv(tmp_path / "o.csv")["c"]) == {"x"}) or (code == 2 and err.count("\n") == 1)


# ----------------------------------------------------------------------------- flags and messages
def test_debug_is_accepted_after_the_command(table, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        main(["fit", str(table), "--model", "nosuch", "--out", str(tmp_path / "r"), "--debug"])
    with pytest.raises(DataError):
        main(["sample", str(tmp_path / "none"), "-n", "2", "-o", str(tmp_path / "o.csv"), "--debug"])


def test_messages_name_the_cli_flags(capsys, tmp_path):
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": [f"u{i}" for i in range(40)], "v": np.arange(40.0)}).to_csv(path, index=False)
    err = _fails(capsys, "fit", path, "--model", "tabddpm", "--out", tmp_path / "r", "--max-categories", "10")
    assert "max_categories=10" in err and "--max-categories" in err and "--column-kind" in err
    err = _fails(capsys, "fit", path, "--model", "tabddpm", "--out", tmp_path / "r", "--option", "nosuch=3")
    assert err.count("--option nosuch") == 1 and "options are" in err
    err = _fails(capsys, "fit", path, "--model", "smote", "--out", tmp_path / "r", "--option", "nosuch=3")
    assert "--option nosuch" in err and "k_neighbors" in err
    err = _fails(capsys, "fit", path, "--model", "tabddpm", "--out", tmp_path / "r", "--option", "lr=-1")
    assert "--option lr=-1" in err
    assert not (tmp_path / "r").exists()


def test_public_flags_reach_the_preprocessor(capsys, table, tmp_path):
    err = _fails(capsys, "fit", table, "--model", "tabddpm", "--target", "label", "--out", tmp_path / "r",
                 "--public-categories", "c=x,y")
    assert "public_categories" in err and "'c'" in err and "--public-categories" in err
    err = _fails(capsys, "fit", table, "--model", "tabddpm", "--target", "label", "--out", tmp_path / "r",
                 "--public-bounds", "c=0:1")
    assert "public_bounds" in err and "'c'" in err


@pytest.mark.parametrize("argv, expected", [
    (["--option", "novalue"], "--option expects KEY=VALUE"),
    (["--public-bounds", "a=1"], "--public-bounds expects COL=LO:HI"),
    (["--column-kind", "a"], "--column-kind expects COL=KIND"),
    (["--max-categories", "0"], "--max-categories expects a positive integer"),
])
def test_bad_key_value_flags_are_one_line(capsys, table, tmp_path, argv, expected):
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(table), "--model", "smote", "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and expected in err


def test_key_value_parsers():
    from tabdiff_jax import cli_support as cs

    assert cs.option("lr=0.001") == ("lr", 0.001)
    assert cs.option("hidden-dims=[64, 64]") == ("hidden_dims", [64, 64])
    assert cs.option("schedule=linear") == ("schedule", "linear")
    assert cs.public_bounds("age=17:90") == ("age", (17, 90))
    assert cs.public_bounds("t=2020-01-01..2021-01-01") == ("t", ("2020-01-01", "2021-01-01"))
    assert cs.public_categories("c=x, y") == ("c", ["x", "y"])
    assert cs.public_categories("n=1,2,3") == ("n", [1, 2, 3])
    with pytest.raises(ConfigError, match="--column-kind a: given twice"):
        cs.pairs([("a", "numeric"), ("a", "categorical")], "--column-kind")


def test_fit_help_lists_every_model_and_sample_help_every_argument(capsys):
    from tabdiff_jax.models.base import MODEL_MODULES

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "see `tabdiff-jax fit --help`" not in out
    model_lines = out.split("models:\n", 1)[1].splitlines()
    assert sorted(line.split()[0] for line in model_lines if line.strip()) == sorted(MODEL_MODULES)
    sample = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "sample")[1]
    for action in sample._actions:
        assert action.help, action.dest


def test_warnings_print_as_one_line(capsys, monkeypatch):
    from tabdiff_jax.privacy.preprocessing import PrivacyWarning

    def warn(args):
        warnings.warn("TableDiffusion: learned bounds.\n  Pass public_bounds= for a private pipeline", PrivacyWarning)
        return 0

    monkeypatch.setitem(cli.COMMANDS, "evaluate", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown whatever -W the tests run under
        assert main(["evaluate", "--real", "x.csv", "--synthetic", "y.csv"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tabdiff-jax: PrivacyWarning: TableDiffusion: learned bounds.")
    assert "--public-bounds" in err and "warnings.warn" not in err


def test_evaluate_prints_its_notes_after_the_table(capsys, tmp_path):
    real, syn = tmp_path / "real.csv", tmp_path / "syn.csv"
    _table(60).to_csv(real, index=False)
    _table(60, seed=2).to_csv(syn, index=False)
    assert main(["evaluate", "--real", str(real), "--synthetic", str(syn), "--target", "label"]) == 0
    out = capsys.readouterr().out
    table_end = out.index("(evaluated in")
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert any("utility skipped" in n for n in notes) and any("holdout" in n for n in notes)
    assert out.index("note: ") > table_end


def test_resume_may_change_the_length_of_a_non_private_run_only():
    import pandas as pd

    from tabdiff_jax.runs import differences, fit_record

    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"]})
    for model, config, fixed in (("gan", {}, False), ("tabddpm", {"steps": 10}, False),
                                 ("tablediffusion", {}, True), ("dpgan", {"epsilon": 5.0}, True),
                                 ("tablediffusion", {"epsilon": None}, False)):
        saved = fit_record(model, {**config, "epochs": 4}, df, {"steps": None})
        longer = fit_record(model, {**config, "epochs": 6}, df, {"steps": 20})
        diffs = differences(saved, longer)
        # a private run's noise multiplier was calibrated for its planned length: no extension
        assert (diffs == ["epochs 4 -> 6", "steps null -> 20"]) if fixed else not diffs, (model, config, diffs)
