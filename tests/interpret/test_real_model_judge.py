"""The parser meets a real model's free-form answers: SmolLM2-135M-Instruct behind the local judge server."""

from __future__ import annotations

import pytest
from helpers import synthetic_contexts

from sae_lens_routing.interpret import JudgeConfig, interpret_features


@pytest.mark.real_model
def test_every_real_answer_is_parsed_or_counted_unparsed(judge_server, tmp_path):
    server = judge_server(model="smollm2", wait_s=300)
    judge = JudgeConfig(url=server.url, model="smollm2", concurrency=2, timeout_s=240)
    result = interpret_features(
        judge=judge, out=tmp_path, contexts=synthetic_contexts(2), n_features=2, protocol="both", log=print
    )
    for f in result.features:
        assert f.paper in ("scored", "unparsed")
        assert (f.score is None) == (f.paper == "unparsed") and (f.category is None) == (f.score is None)
        assert f.detection in ("scored", "unparsed")
        assert (f.detection_accuracy is None) == (f.detection == "unparsed")
    summary = result.summary
    for protocol in ("paper", "detection"):
        assert summary[protocol]["n_scored"] + summary[protocol]["n_unparsed"] == 2
    # 2 features x (1 paper + 2 detection), and at most one more for each unparsable answer
    assert 6 <= len(server.requests()) == result.usage["requests"] <= 12
