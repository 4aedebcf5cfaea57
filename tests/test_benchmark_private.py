"""benchmarks/private.py: a --quick MST run writes its entry, keeps it on a rerun, and prints the table."""

import json
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow  # fits MST on Adult (20 mirror-descent steps) and runs the evaluation (~1 min)
def test_quick_run_writes_keeps_and_prints(tmp_path, capsys):
    import private

    out = tmp_path / "p.json"
    assert private.main(["--models", "mst", "--epsilons", "2", "--quick", "--threads", "1", "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["mst_eps2"]
    assert entry["nothing_learned_outside_budget"] and entry["epsilon_spent"] == pytest.approx(2.0, rel=1e-6)
    assert 0.0 <= entry["shape"] <= 1.0 and 0.5 <= entry["detection_auc"] <= 1.0 and entry["fit_seconds"] > 0
    assert "| mst | 2 |" in capsys.readouterr().out
    assert private.main(["--models", "mst", "--epsilons", "2", "--quick", "--out", str(out)]) == 0
    assert "mst_eps2: kept" in capsys.readouterr().out
    assert json.loads(out.read_text())["mst_eps2"] == entry  # not refitted


def test_unknown_model_is_refused(capsys):
    import private

    with pytest.raises(SystemExit):
        private.main(["--models", "nope"])
    assert "unknown models ['nope']" in capsys.readouterr().err
