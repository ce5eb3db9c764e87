"""The judge client against a real local OpenAI-compatible server process: retries, unparsable answers, a
killed run resumed without paying twice, the API key never written, the dry run sending nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from helpers import make_sae, synthetic_contexts

from sae_lens_routing.cli.main import main
from sae_lens_routing.interpret import JudgeConfig, interpret_features
from sae_lens_routing.interpret.contexts import write_contexts
from sae_lens_routing.interpret.judge import Judge


def quiet(*_):
    pass


def _config(server, **kw):
    return JudgeConfig(url=server.url, model="judge", concurrency=1, **kw)


def test_retries_on_429_with_retry_after_500_and_timeout(judge_server, tmp_path):
    server = judge_server(actions=[{"status": 429, "retry_after": 1}, {"status": 500}, {"sleep": 3}])
    result = interpret_features(
        judge=_config(server, timeout_s=1.0),
        out=tmp_path,
        contexts=synthetic_contexts(2),
        n_features=2,
        log=quiet,
    )
    assert [f.paper for f in result.features] == ["scored", "scored"]
    assert [f.score for f in result.features] == [4, 4]
    reqs = server.requests()
    assert len(reqs) == 2 + 3  # each failure retried; nothing else repeated
    assert reqs[1]["t"] - reqs[0]["t"] >= 1.0  # Retry-After: 1 honoured (openai's backoff alone is <= 0.5 s)
    assert reqs[3]["t"] - reqs[2]["t"] >= 0.9  # the slow answer was abandoned at the 1 s time-out
    assert {r["hash"] for r in reqs[:4]} == {reqs[0]["hash"]}
    assert result.usage["requests"] == 2 and result.usage["tokens_in"] > 0
    assert all(r["seed"] == 0 for r in reqs)


def test_unparsable_answer_retried_once_then_counted_never_scored(judge_server, tmp_path):
    bad = [
        {"content": "It is a low-level feature, score 4/5."},
        {"content": "Feature category: Medium\nScore: 4\n"},
    ]
    bad_list = [{"content": "[1, 0]"}, {"content": "yes, the first ones"}]
    server = judge_server(actions=[*bad, {}, *bad_list])
    result = interpret_features(
        judge=_config(server),
        out=tmp_path,
        contexts=synthetic_contexts(1),
        n_features=1,
        protocol="both",
        log=quiet,
    )
    (f,) = result.features
    assert (f.paper, f.score, f.category) == ("unparsed", None, None)
    assert f.detection == "unparsed" and f.detection_accuracy is None
    assert f.detection_explanation == "words from news reports."
    assert f.unparsed == {"paper": "Feature category: Medium\nScore: 4\n", "verdicts": "yes, the first ones"}
    reqs = server.requests()
    assert (
        len(reqs) == 5
        and reqs[0]["hash"] == reqs[1]["hash"]
        and reqs[3]["hash"] == reqs[4]["hash"] != reqs[2]["hash"]
    )
    assert [r["seed"] for r in reqs] == [0, 1, 0, 0, 1]  # a second attempt asks with another seed
    data = json.loads((tmp_path / "interpretability.json").read_text())
    paper = data["summary"]["paper"]
    assert (paper["n_scored"], paper["n_unparsed"], paper["mean_score"]) == (0, 1, None)
    assert data["summary"]["detection"]["n_unparsed"] == 1


def test_detection_balanced_accuracy_and_per_layer_summary(judge_server, tmp_path):
    server = judge_server()  # answers [0, 1, 0, 1, ...] to every verdict request
    contexts = synthetic_contexts(3)
    result = interpret_features(
        judge=_config(server), out=tmp_path, contexts=contexts, n_features=3, protocol="both", log=quiet
    )
    from sae_lens_routing.interpret.judge import balanced_accuracy, shuffled_heldout

    for f in result.features:
        labels = [h["label"] for h in shuffled_heldout(contexts.detection[f.feature], f.feature, 0)]
        expected = balanced_accuracy(labels, [(i + 1) % 2 for i in range(len(labels))])
        assert f.detection == "scored" and f.detection_accuracy == pytest.approx(expected, abs=1e-4)
        assert f.heldout == {"activating": 4, "non_activating": 4, "quantile_1": 2, "quantile_2": 2}
    summary = json.loads((tmp_path / "interpretability.json").read_text(), parse_constant=float)["summary"]
    per_layer = summary["paper"]["per_layer"]
    assert [v["n_features"] for v in per_layer.values()] == [1, 1, 1]  # synthetic feature f lives on layer f
    assert summary["paper"]["categories"]["low-level"] == {"count": 3, "mean_score": 4}
    assert (tmp_path / "interpretability.png").stat().st_size > 1000
    assert len(server.requests()) == 9  # 3 per feature


def test_a_remote_judge_needs_the_key_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    cfg = JudgeConfig(url="https://api.openai.com/v1", model="gpt-4o-mini", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR is not set"):
        _ = Judge(cfg, tmp_path).client


def test_azure_url_makes_an_azure_client_with_the_url_api_version(tmp_path, monkeypatch):
    import openai

    monkeypatch.setenv("AZ_KEY", "k")
    url = "https://myres.openai.azure.com/?api-version=2024-06-01"
    client = Judge(JudgeConfig(url=url, model="gpt4o-deploy", api_key_env="AZ_KEY"), tmp_path).client
    assert isinstance(client, openai.AzureOpenAI) and client._api_version == "2024-06-01"
    assert str(client.base_url).startswith("https://myres.openai.azure.com/openai")


def test_dry_run_prints_a_prompt_and_the_plan_and_sends_nothing(judge_server, tmp_path, capsys):
    server = judge_server()
    sae_dir, ctx = tmp_path / "sae", tmp_path / "contexts.json"
    make_sae().save_model(sae_dir)
    write_contexts(synthetic_contexts(4), ctx)
    argv = ["interpret", "--sae", str(sae_dir), "--out", str(tmp_path / "out"), "--contexts", str(ctx)]
    argv += ["--judge-url", server.url, "--judge-model", "gpt-4o", "--protocol", "both", "--dry-run"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Feature category: [Low-level/High-level/Undiscernible]" in printed and "[system]" in printed
    assert "Token: tok" in printed and "requests: 12 (4 features x 3" in printed
    assert "estimated tokens: ~" in printed and "at gpt-4o list price" in printed
    time.sleep(0.2)
    assert server.requests() == [] and not (tmp_path / "out" / "judge_cache").exists()


def test_killed_run_resumes_without_repeating_a_stored_request_and_never_writes_the_key(
    judge_server, tmp_path, capsys, monkeypatch
):
    """The first run is a real process, killed mid-run; the resume runs the same command in this process."""
    secret = "sk-test-DO-NOT-WRITE-0123456789"
    server = judge_server(delay=0.3)
    sae_dir, ctx, out = tmp_path / "sae", tmp_path / "contexts.json", tmp_path / "out"
    make_sae().save_model(sae_dir)
    write_contexts(synthetic_contexts(8), ctx)
    args = ["interpret", "--sae", str(sae_dir), "--out", str(out), "--contexts", str(ctx)]
    args += ["--judge-url", server.url, "--judge-model", "judge", "--api-key-env", "JUDGE_TEST_KEY"]
    args += ["--n-features", "8", "--protocol", "both"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JUDGE_TEST_KEY": secret}
    first = subprocess.Popen(
        [sys.executable, "-m", "sae_lens_routing", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cache = out / "judge_cache"
    deadline = time.time() + 120
    while len(list(cache.glob("*.json"))) < 10 and time.time() < deadline:
        time.sleep(0.02)
    first.kill()
    logs = list(first.communicate())
    stored = {message_hash(json.loads(p.read_text())["messages"]) for p in cache.glob("*.json")}
    assert 10 <= len(stored) < 24  # killed mid-run: 8 features x 3 requests were due
    n_before = len(server.requests())
    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    assert main(args) == 0
    logs += list(capsys.readouterr())
    resumed = server.requests()[n_before:]
    assert resumed and not {r["hash"] for r in resumed} & stored  # no stored answer asked for again
    assert len(resumed) == 24 - len(stored)
    data = json.loads((out / "interpretability.json").read_text())
    assert len(data["features"]) == 8 and data["summary"]["paper"]["n_scored"] == 8
    assert data["summary"]["detection"]["n_scored"] == 8
    assert data["usage"]["cached"] == len(stored) and data["usage"]["requests"] == len(resumed)
    files = [p for p in out.rglob("*") if p.is_file()]
    visible = [p for p in files if not p.name.startswith(".")]  # a kill mid-write may leave a hidden temp
    assert len(visible) == 24 + 3  # the stored answers, interpretability.json and .png, the manifest
    assert all(p.name.endswith(".tmp") for p in files if p not in visible)
    assert all(json.loads(p.read_text())["content"] for p in cache.glob("*.json"))  # none half-written
    for p in files:
        assert secret.encode() not in p.read_bytes(), p
    for text in logs:
        assert secret not in text


def message_hash(messages):
    import hashlib

    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def test_a_refused_key_stops_the_run_with_one_error_line(judge_server, tmp_path, capsys):
    from sae_lens_routing.cli.main import cli

    server = judge_server(actions=[{"status": 401}])
    sae_dir, ctx = tmp_path / "sae", tmp_path / "contexts.json"
    make_sae().save_model(sae_dir)
    write_contexts(synthetic_contexts(1), ctx)
    argv = ["interpret", "--sae", str(sae_dir), "--out", str(tmp_path / "out"), "--contexts", str(ctx)]
    assert cli([*argv, "--judge-url", server.url, "--judge-model", "judge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the judge at http://127.0.0.1:")
    assert "refused the request with HTTP 401" in err[0] and "$OPENAI_API_KEY" in err[0]
    assert len(server.requests()) == 1  # not retried
