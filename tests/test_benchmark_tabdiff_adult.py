"""benchmarks/tabdiff_adult.py's helpers: the education mapping share and the model's own p(target | x)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_education_mapping_share_counts_pairs_seen_in_the_real_table():
    from tabdiff_adult import education_mapping_share

    real = pd.DataFrame({"education": ["HS", "BA", "HS"], "education-num": [9, 13, 9]})
    syn = pd.DataFrame({"education": ["HS", "BA", "BA", "MA"], "education-num": [9.0, 13.0, 9.0, 14.0]})
    assert education_mapping_share(real, syn) == pytest.approx(0.5)


def test_target_probabilities_read_the_other_columns_not_the_target():
    """On a table whose class is a function of a category, the network's p(class | other columns) is a
    distribution per row, classifies the rows, and does not move when the rows' own class is changed (the
    target block is masked)."""
    from tabdiff_adult import classifier_check, target_probabilities

    from tabdiff_jax.models.tabdiff import TabDiff

    rng = np.random.default_rng(0)
    n = 600
    colour = rng.choice(["red", "green", "blue"], n)
    df = pd.DataFrame({"x": rng.normal(size=n), "colour": colour,
                       "label": np.where(colour == "red", "yes", "no")})
    model = TabDiff(hidden_dims=(64, 64), steps=600, batch_size=256).fit(df, target="label", seed=0, progress=False)
    p, y = target_probabilities(model, df)
    assert p.shape == (n, 2) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    assert np.mean(p.argmax(1) == y) > 0.95
    flipped = df.assign(label=np.where(df["label"] == "yes", "no", "yes"))
    p_flipped, y_flipped = target_probabilities(model, flipped)
    np.testing.assert_allclose(p_flipped, p, atol=1e-6)
    assert np.all(y_flipped != y)
    check = classifier_check(model, df, df.iloc[:100])
    assert check["train"]["accuracy"] > 0.95 and set(check["test"]) == {"accuracy", "log_loss", "f1_macro"}


def test_the_readme_adult_recipe_runs_from_the_cli_as_written(capsys, tmp_path):
    """The 30-minute Adult recipe's command line in README.md, with 2 steps for its 50,000: every option it
    names reaches the fitted model, and the run samples (the target drawn last, the periodic embeddings)."""
    import re
    import shlex

    from tabdiff_jax.cli import main
    from tabdiff_jax.runs import load_run

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    found = re.findall(r"^tabdiff-jax fit adult --model tabdiff .*$", readme, flags=re.M)
    assert len(found) == 1, found
    argv = shlex.split(found[0])[1:]
    assert argv[argv.index("--steps") + 1] == "50000"
    argv[argv.index("--steps") + 1] = "2"
    argv[argv.index("--out") + 1] = str(tmp_path / "run")
    assert main(argv + ["--no-progress"]) == 0, capsys.readouterr().err
    model = load_run(tmp_path / "run")
    s = model.settings
    assert (list(s["hidden_dims"]), s["target_last"], s["numeric_embedding"]) == ([512, 512, 512], True, "periodic")
    assert model.fit_info["steps"] == 2
    out = tmp_path / "rows.csv"
    assert main(["sample", str(tmp_path / "run"), "-n", "16", "-o", str(out), "--seed", "1"]) == 0
    rows = pd.read_csv(out)
    assert len(rows) == 16 and set(rows["income"]) <= {"<=50K", ">50K"}
