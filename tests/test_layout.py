"""The package's layering: one model's import does not pull in another model or another family's core."""

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tabdiff_jax"

# estimator module -> module prefixes it must not import
FORBIDDEN = {
    "tabdiff_jax.models.tabddpm": ("tabdiff_jax.models.", "tabdiff_jax.gan", "tabdiff_jax.vae",
                                   "tabdiff_jax.privacy", "tabdiff_jax.diffusion.tablediffusion", "tabdiff_jax.evaluate"),
    "tabdiff_jax.models.tabdiff": ("tabdiff_jax.models.", "tabdiff_jax.gan", "tabdiff_jax.vae", "tabdiff_jax.privacy",
                                   "tabdiff_jax.diffusion.tablediffusion", "tabdiff_jax.diffusion.samplers",
                                   "tabdiff_jax.evaluate"),
    "tabdiff_jax.models.tablediffusion": ("tabdiff_jax.models.", "tabdiff_jax.gan", "tabdiff_jax.vae",
                                          "tabdiff_jax.diffusion.tabddpm", "tabdiff_jax.diffusion.samplers",
                                          "tabdiff_jax.evaluate"),
    "tabdiff_jax.models.gan": ("tabdiff_jax.models.", "tabdiff_jax.diffusion", "tabdiff_jax.vae", "tabdiff_jax.evaluate"),
    "tabdiff_jax.models.dpgan": ("tabdiff_jax.models.tab", "tabdiff_jax.models.tvae", "tabdiff_jax.models.smote",
                                 "tabdiff_jax.models.marginal", "tabdiff_jax.diffusion", "tabdiff_jax.vae",
                                 "tabdiff_jax.evaluate"),
    "tabdiff_jax.models.tvae": ("tabdiff_jax.models.", "tabdiff_jax.diffusion", "tabdiff_jax.gan.train",
                                "tabdiff_jax.gan.private", "tabdiff_jax.privacy", "tabdiff_jax.evaluate"),
    "tabdiff_jax.models.smote": ("tabdiff_jax.models.", "tabdiff_jax.diffusion", "tabdiff_jax.gan", "tabdiff_jax.vae",
                                 "tabdiff_jax.privacy", "tabdiff_jax.evaluate"),
}
ALLOWED = {"tabdiff_jax.models.base", "tabdiff_jax.models.registry"}


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_a_model_imports_only_its_own_core(module):
    code = f"import sys, {module}; print('\\n'.join(sorted(m for m in sys.modules if m.startswith('tabdiff_jax'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert module in out
    bad = [m for m in out if m != module and m not in ALLOWED and m.startswith(FORBIDDEN[module])]
    assert not bad, f"importing {module} imported {bad}"


def test_import_tabdiff_jax_is_lazy():
    code = "import sys, tabdiff_jax; print(sorted(m for m in sys.modules if m.startswith('tabdiff_jax.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "tabdiff_jax.models" not in out and "jax" not in out.replace("tabdiff_jax", "")


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines (two concepts each): {long}"
