"""Every example runs to the end with tiny settings (slow: each trains briefly on Adult)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ARGS = {
    "tabddpm_quick_start.py": ["--steps", "20"],
    "tabddpm_conditional_sampling.py": ["--steps", "20"],
    "tabddpm_custom_jax_loop.py": ["--steps", "20"],
    "dpsgd_own_model.py": ["--epochs", "0.2"],
    "gan_core_loop.py": ["--epochs", "1", "--rows", "1000"],
    "evaluate_any_tables.py": ["--rows", "600"],
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(ARGS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARGS))
def test_example_runs(name, tmp_path):
    extra = ["--out", str(tmp_path / "run")] if name == "tabddpm_quick_start.py" else []
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *ARGS[name], *extra], capture_output=True, text=True,
                          cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "an example prints what it did"
