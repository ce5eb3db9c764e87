"""The model card summarises the judge's verdict when interpretability.json sits in the SAE folder."""

from __future__ import annotations

from helpers import SPLICE_HOOKS, make_sae

from sae_lens_routing import write_model_card
from sae_lens_routing.interpret.results import FeatureInterpretation, InterpretationResult, write_result


def test_card_gets_the_interpretability_summary_only_when_the_file_is_present(tmp_path):
    folder = tmp_path / "sae"
    make_sae().save_model(folder)
    card, _ = write_model_card(folder, repo_id="user/repo", sae_id="sae")
    assert "Interpretability" not in card.read_text()
    features = [
        FeatureInterpretation(0, [1.0, 0, 0], SPLICE_HOOKS[0], "scored", "low-level", 4, "bank"),
        FeatureInterpretation(1, [0, 0, 1.0], SPLICE_HOOKS[2], "scored", "high-level", 2, "lists"),
        FeatureInterpretation(2, [0, 0, 1.0], SPLICE_HOOKS[2], "unparsed"),
    ]
    result = InterpretationResult("paper", "gpt-4o", "https://x/v1", 0, SPLICE_HOOKS, 40, features)
    write_result(result, folder)
    card, _ = write_model_card(folder, repo_id="user/repo", sae_id="sae")
    text = card.read_text()
    assert "## Interpretability (LLM judge)" in text and "Judge `gpt-4o`, 3 sampled of 40 counted" in text
    assert "mean score 3 over 2 features (1 answers unparsed)" in text
    assert "low-level 1 (mean 4)" in text and "high-level 1 (mean 2)" in text
    assert f"`{SPLICE_HOOKS[0]}` 4 (n=1)" in text and f"`{SPLICE_HOOKS[2]}` 2 (n=1)" in text
