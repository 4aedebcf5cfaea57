"""Privacy of preprocessing: what a fitted preprocessor learned from the private table.

DP-SGD protects the training steps only. Bounds, category sets, quantiles or imputation medians
that the preprocessor learns from the private table are released without noise (they shape the
synthetic output), so a private model must either get them as public knowledge
(``public_bounds=`` / ``public_categories=`` and a transform that needs nothing else, such as
``numeric="minmax"``) or say that this part is outside its (epsilon, delta) guarantee.
"""

from __future__ import annotations

import warnings


class PrivacyWarning(UserWarning):
    """Something spends privacy outside the accounted (epsilon, delta) budget."""


def audit_preprocessing(preprocessor, model_name: str) -> dict:
    """Warn about, and describe, everything the preprocessor learned from the private data.

    Args:
      preprocessor: a fitted :class:`tabdiff_jax.preprocess.Preprocessor`.
      model_name: used in the warning.

    Returns:
      A JSON-able record for ``run.json``: ``{"data_dependent": {column: [facts]}, "private":
      bool, "note": str}``; ``private`` is True when nothing was learned from the data.
    """
    facts = {str(col): list(f) for col, f in preprocessor.data_dependent().items() if f}
    if not facts:
        return {"data_dependent": {}, "private": True,
                "note": "all bounds and categories were public; preprocessing used no private information"}
    listed = "; ".join(f"{col}: {', '.join(f)}" for col, f in facts.items())
    note = ("the preprocessor learned these from the private data, outside the (epsilon, delta) budget: "
            f"{listed}. Pass public_bounds= and public_categories= (with numeric='minmax') for a fully "
            "private pipeline.")
    warnings.warn(f"{model_name}: {note}", PrivacyWarning, stacklevel=3)
    return {"data_dependent": facts, "private": False, "note": note}


def budget_summary(fit_info: dict) -> str | None:
    """One line on a private fit's budget for the CLI: epsilon spent of the target, and what (if anything)
    was learned from the private table outside it; None for a model that is not private."""
    if fit_info.get("epsilon") is None:
        return None
    spent = fit_info.get("epsilon_spent")
    line = (f"privacy: epsilon {'?' if spent is None else f'{float(spent):.3f}'} spent of {float(fit_info['epsilon']):g}"
            f" (delta {fit_info.get('delta')})")
    audit = fit_info.get("preprocessing")
    if not isinstance(audit, dict):
        return line + "; what preprocessing learned from the data is not recorded"
    facts = audit.get("data_dependent") or {}
    if not facts:
        return line + "; nothing learned from the private table outside the budget"
    listed = "; ".join(f"{col}: {', '.join(f)}" for col, f in facts.items())
    return (line + f"; learned OUTSIDE the budget: {listed} (pass --public-bounds / --public-categories with "
            "--numeric minmax for a fully private run)")
