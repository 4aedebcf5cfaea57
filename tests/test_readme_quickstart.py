"""The README's Quick start block runs as written (training shortened): a stranger's first lines."""

import re
from pathlib import Path

import numpy as np
import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"
SHORTER = {  # the training lengths only; every call, argument and output of the block as written
    "TabDDPM(steps=2000)": "TabDDPM(steps=10)",
    "TabDiff()": "TabDiff(steps=10)",
    "TableDiffusion(epsilon=1.0, delta=1e-5)": "TableDiffusion(epsilon=1.0, delta=1e-5, epochs=1)",
}


def quick_start() -> str:
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    for old, new in SHORTER.items():
        assert old in block, f"README Quick start no longer has {old!r}: update SHORTER"
        block = block.replace(old, new)
    return block


def test_the_quick_start_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(quick_start(), str(README), "exec"), scope)  # noqa: S102 - our own README
    train, test = scope["train"], scope["test"]
    for name in ("synthetic", "rich", "women", "filled"):
        assert list(scope[name].columns) == list(train.columns), name
    assert (scope["rich"]["income"] == ">50K").all()
    assert (scope["women"]["sex"] == "Female").all() and (scope["women"]["age"] == 40).all()
    gaps, filled = scope["gaps"], scope["filled"]
    assert gaps["hours-per-week"].isna().sum() == 334 and filled.notna().all().all()
    kept = gaps.notna()
    pd.testing.assert_frame_equal(filled.where(kept), gaps.where(kept), check_dtype=False)  # observed cells untouched
    assert np.isin(filled.loc[gaps["hours-per-week"].isna(), "hours-per-week"], train["hours-per-week"]).mean() > 0.5
    assert (tmp_path / "run" / "model.json").exists() and (tmp_path / "report.json").exists()
    assert len(scope["same"].sample(5, seed=1)) == 5 and scope["private"].fitted
    assert test.shape[1] == train.shape[1]
