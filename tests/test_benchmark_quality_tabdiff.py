"""benchmarks/quality_tabdiff.py end to end: a --quick run on the smallest table writes its JSON."""

import json
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_detection_score_is_sdmetrics_formula():
    from quality_tabdiff import detection_score

    assert detection_score(0.5) == 1.0 and detection_score(0.3) == 1.0  # below chance: clipped
    assert detection_score(0.6) == pytest.approx(0.8) and detection_score(1.0) == 0.0


@pytest.mark.slow  # fits TabDDPM for 200 steps and runs the whole evaluation (~1-3 min on 2 busy cores)
def test_quick_run_writes_results(tmp_path, capsys):
    import quality_tabdiff

    out = tmp_path / "q.json"
    assert quality_tabdiff.main(["--datasets", "insurance", "--models", "tabddpm", "--quick", "--threads", "1",
                                 "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["insurance"]
    m = entry["models"]["tabddpm"]
    assert entry["rows_train"] == 1070 and m["steps"] == 200 and m["metric"] == "r2"
    for key in ("shape", "trend", "alpha_precision", "beta_recall", "logistic_detection_score"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["boosted_detection_score"] == pytest.approx(max(0.0, min(1.0, 2 - 2 * m["detection_auc"])))
    assert m["sample_rows_per_second"] > 0 and m["dcr_median"] >= 0
    assert "| insurance | tabddpm |" in capsys.readouterr().out
