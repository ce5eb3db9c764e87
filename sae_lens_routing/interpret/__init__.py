"""Are the features interpretable? An LLM judge scores sampled routed features (paper rubric, detection)."""

from sae_lens_routing.interpret.contexts import InterpretContexts, compute_contexts, read_contexts
from sae_lens_routing.interpret.judge import JudgeConfig, JudgeError, interpret_features
from sae_lens_routing.interpret.results import FeatureInterpretation, InterpretationResult

__all__ = ["FeatureInterpretation", "InterpretContexts", "InterpretationResult", "JudgeConfig", "JudgeError",
           "compute_contexts", "interpret_features", "read_contexts"]
