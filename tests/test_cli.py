import subprocess
import sys

import pytest

from tabdiff_jax import __version__
from tabdiff_jax.cli import main
from tabdiff_jax.errors import ConfigError


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "tabdiff_jax.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "fit", "sample", "evaluate"):
        assert command in proc.stdout
    version = subprocess.run([sys.executable, "-m", "tabdiff_jax.cli", "--version"], capture_output=True, text=True)
    assert __version__ in version.stdout


def test_no_command_prints_help_and_fails(capsys):
    code, out, _ = _run(capsys)
    assert code == 2 and "usage" in out


def test_unknown_model_is_one_line_error(capsys, shared_data, tmp_path):
    code, out, err = _run(capsys, "fit", str(shared_data / "insurance.csv"), "--model", "nosuchmodel", "--out", str(tmp_path / "r"))
    assert code == 2
    assert err.count("\n") == 1 and "--model 'nosuchmodel' does not exist" in err
    assert "Traceback" not in err


def test_debug_flag_shows_the_exception(shared_data, tmp_path):
    with pytest.raises(ConfigError):
        main(["--debug", "fit", str(shared_data / "insurance.csv"), "--model", "nosuchmodel", "--out", str(tmp_path / "r")])


def test_bad_flag_values_name_the_flag(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "x.csv", "--model", "smote", "--out", str(tmp_path), "--steps", "-3"])
    assert exc.value.code == 2
    assert "--steps expects a positive integer, got '-3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "x.csv", "--model", "smote", "--out", str(tmp_path), "--epsilon", "nan"])
    assert "--epsilon expects a positive finite number" in capsys.readouterr().err


def test_sample_from_a_folder_that_is_not_a_run(capsys, tmp_path):
    code, _, err = _run(capsys, "sample", str(tmp_path), "-n", "5", "-o", str(tmp_path / "o.csv"))
    assert code == 2 and "not a saved model (no model.json)" in err
    assert not (tmp_path / "o.csv").exists()


def test_demo_quick_runs_end_to_end(capsys, tmp_path):
    code = main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    for name in ("report.md", "report.json", "synthetic.csv", "model/model.json", "model/run.json"):
        assert (tmp_path / "demo" / name).exists(), name
    assert "utility f1_macro, train on synthetic" in out
    import pandas as pd
    from tabdiff_jax import datasets

    synthetic = pd.read_csv(tmp_path / "demo" / "synthetic.csv")
    assert list(synthetic.columns) == list(datasets.load("adult")[0].columns) and len(synthetic) == 1000
