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
    for module in ("tabdiff_jax.cli", "tabdiff_jax"):  # python -m tabdiff_jax too
        version = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
        assert version.returncode == 0 and __version__ in version.stdout


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


# Every registered model, fitted and sampled through the command line on Adult's columns.
B = ["--batch-size", "100"]
CLI_MODEL_ARGS = {
    "tabddpm": ["--steps", "3", *B],
    "tablediffusion": ["--epochs", "1", "--epsilon", "5", *B],
    "smote": [],
    "tvae": ["--epochs", "1", *B],
    "gan": ["--epochs", "1", *B],
    "cgan": ["--epochs", "1", *B],
    "wgan": ["--epochs", "1", *B],
    "wgan-gp": ["--epochs", "1", *B],
    "ctgan": ["--epochs", "1", *B],
    "dpgan": ["--epochs", "1", "--epsilon", "5", *B],
    "tabdiff": ["--steps", "3", *B],
    "mst": ["--epsilon", "5", "--option", "iters=20"],
    "aim": ["--epsilon", "5", "--option", "iters=20", "--option", "round_iters=5"],
}


def test_every_registered_model_has_a_cli_case():
    from tabdiff_jax.models.base import MODEL_MODULES

    assert sorted(CLI_MODEL_ARGS) == sorted(MODEL_MODULES)


def _fit_and_sample_from_cli(capsys, tmp_path, data, model, n=64):
    import pandas as pd

    run = tmp_path / f"run-{model}"
    code, out, err = _run(capsys, "fit", str(data), "--model", model, "--target", "income", "--out", str(run),
                          "--no-progress", *CLI_MODEL_ARGS[model])
    assert code == 0, err
    if "--epsilon" in CLI_MODEL_ARGS[model]:  # no public bounds given: the CLI names what was learned outside
        assert "privacy: epsilon" in out and "learned OUTSIDE the budget: age: bounds" in out, out
    else:
        assert "privacy:" not in out
    out = tmp_path / f"{model}.parquet"
    code, _, err = _run(capsys, "sample", str(run), "-n", str(n), "-o", str(out), "--seed", "3")
    assert code == 0, err
    return pd.read_parquet(out)


# Four families by default (every model is fitted and sampled in tests/test_sampling_contract.py); all with -m slow.
DEFAULT_CLI_MODELS = {"tabddpm", "tablediffusion", "ctgan", "smote"}


@pytest.mark.parametrize("model", [m if m in DEFAULT_CLI_MODELS else pytest.param(m, marks=pytest.mark.slow)
                                   for m in sorted(CLI_MODEL_ARGS)])
def test_every_model_fits_and_samples_adult_columns_from_the_cli(capsys, tmp_path, model):
    """A 600-row sample of the bundled Adult table (all 15 columns): columns, order and dtypes come back."""
    from tabdiff_jax import datasets

    train = datasets.load("adult")[0].sample(600, random_state=0).reset_index(drop=True)
    data = tmp_path / "adult600.parquet"
    train.to_parquet(data)
    synthetic = _fit_and_sample_from_cli(capsys, tmp_path, data, model)
    assert len(synthetic) == 64
    assert list(synthetic.columns) == list(train.columns)
    assert synthetic.dtypes.to_dict() == train.dtypes.to_dict()
    for col in train.columns:  # categories are ones seen in training
        if train[col].dtype.kind not in "iuf":
            assert set(synthetic[col].dropna()) <= set(train[col].dropna()), col


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(CLI_MODEL_ARGS))
def test_every_model_fits_and_samples_the_full_adult_table_from_the_cli(capsys, tmp_path, model):
    """The whole bundled table by its name, as a user types it (`tabdiff-jax fit adult ...`)."""
    from tabdiff_jax import datasets

    train = datasets.load("adult")[0]
    synthetic = _fit_and_sample_from_cli(capsys, tmp_path, "adult", model, n=500)
    assert list(synthetic.columns) == list(train.columns)
    assert synthetic.dtypes.to_dict() == train.dtypes.to_dict()
