"""The LLM judge over `openai`; answers are cached by request hash so a killed run never pays twice."""

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import sae_lens_routing.interpret.contexts as C
from sae_lens_routing.atomic import RunInterrupted, atomic_write_json
from sae_lens_routing.interpret.results import FeatureInterpretation, InterpretationResult, write_result

MAX_TOKENS = 128  # the official code's answer budget; plenty for a 0/1 list of ~16 excerpts too
MAX_ANSWER_CHARS = 8 * 4 * MAX_TOKENS  # a judge that ignores max_tokens is cut here, not stored whole
AZURE_API_VERSION = "2024-10-21"
USAGE_KEYS = ("prompt_tokens", "completion_tokens")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
PRICES = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "gpt-4.1": (2.0, 8.0),  # USD/1M tokens in, out
          "gpt-4.1-mini": (0.4, 1.6), "gpt-4.1-nano": (0.1, 0.4)}


@dataclass(frozen=True)
class JudgeConfig:
    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 30.0  # per request; with the retries, at most ~2 min on one answer
    max_retries: int = 3
    temperature: float = 0.1  # the official code's
    seed: int | None = 0

    def __post_init__(self) -> None:  # the value is never echoed: it may be a key pasted in the wrong place
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(self.api_key_env)):
            raise ValueError("--api-key-env takes the NAME of the environment variable that holds the key "
                             "(e.g. OPENAI_API_KEY), not the key itself; put the key in that variable")

    @property
    def public_url(self) -> str:
        """`url` without user-info (a proxy's `user:KEY@host`): what is stored, shown and uploaded."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class JudgeError(ValueError):
    """A ValueError, so the CLI reports a refusal as one `error:` line."""


def estimated_cost(model: str, tokens_in: int, tokens_out: int) -> tuple[float | None, str]:
    price = PRICES.get(model.split("/")[-1])
    if price is None:
        return None, f"unknown (no price for {model!r})"
    cost = (tokens_in * price[0] + tokens_out * price[1]) / 1e6
    return cost, f"${cost:.4f} at {model} list price"


def approx_tokens(messages: list[dict[str, str]]) -> int:  # ~4 characters a token: no remote tokenizer
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


class Judge:
    """Answers from disk when stored, else from the judge; `usage` counts both (cached: paid before)."""

    def __init__(self, config: JudgeConfig, cache_dir: str | Path):
        self.config, self.cache_dir, self._lock = config, Path(cache_dir), threading.Lock()
        keys = ("requests", "cached", "tokens_in", "tokens_out", "cached_tokens_in", "cached_tokens_out")
        self.usage, self.stopped = dict.fromkeys(keys, 0), False

    def stop(self) -> None:
        """Send nothing new, and drop the requests in flight (their answers would not be kept)."""
        self.stopped = True
        logging.getLogger("openai._base_client").setLevel(logging.WARNING)  # no retry lines after the stop
        if "client" in self.__dict__:
            self.client.close()

    def stored_answer(self, path: Path) -> dict[str, Any] | None:
        """A stored answer, or None (a damaged one is named, deleted and asked again)."""
        if not path.is_file():
            return None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(record["content"], str) and all(record["usage"][k] >= 0 for k in USAGE_KEYS):
                return record
        print(f"judge cache: {path} is damaged (not a stored answer); deleted, asking again", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None

    def ask(self, messages: list[dict[str, str]], parse: Any) -> tuple[Any, str]:
        """The parsed answer (None after a second unparsable one) and the last raw answer."""
        for attempt in (0, 1):
            answer = self.complete(messages, attempt)
            if (parsed := parse(answer)) is not None:
                return parsed, answer
        return None, answer

    def complete(self, messages: list[dict[str, str]], attempt: int = 0) -> str:
        cfg = self.config
        request = {"url": cfg.public_url, "model": cfg.model, "messages": messages, "max_tokens": MAX_TOKENS,
                   "temperature": cfg.temperature, "seed": cfg.seed, "attempt": attempt}
        key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        path = self.cache_dir / f"{key}.json"
        record = self.stored_answer(path)
        if not (stored := record is not None):
            if self.stopped:  # a stopped run sends nothing more: its caller has moved on
                raise RunInterrupted("the judge run was stopped")
            import openai  # a second attempt gets another seed: the same one would repeat the answer
            extra = {"max_tokens": MAX_TOKENS, "temperature": cfg.temperature,
                     **({} if cfg.seed is None else {"seed": cfg.seed + attempt})}
            why = None
            try:
                reply = self.client.chat.completions.create(model=cfg.model, messages=messages, **extra)
            except openai.APIStatusError as e:
                why = f"refused the request with HTTP {e.status_code}"
            except (openai.APIError, ValueError) as e:  # no connection, a timeout, a body that is not JSON
                why = f"gave no usable answer ({type(e).__name__})"
            if why is None and not isinstance(getattr(reply, "choices", None), list):
                why = "answered with something that is not a chat completion (a login page?)"
            if why:
                raise JudgeError(f"the judge at {cfg.public_url} {why} (model {cfg.model!r}); check "
                                 f"--judge-url, --judge-model and the key in ${cfg.api_key_env}") from None
            content = ((reply.choices[0].message.content if reply.choices else None) or "")[:MAX_ANSWER_CHARS]
            if self.stopped:  # arrived after the stop: not kept, so the count the user was told stays true
                raise RunInterrupted("the judge run was stopped")
            record = {"model": cfg.model, "messages": messages, "content": content, "usage": {
                "prompt_tokens": int(getattr(reply.usage, "prompt_tokens", 0) or approx_tokens(messages)),
                "completion_tokens": int(getattr(reply.usage, "completion_tokens", 0) or len(content) // 4)}}
            atomic_write_json(path, record)
        prefix, used = "cached_" * stored, record["usage"]
        with self._lock:
            self.usage["cached" if stored else "requests"] += 1
            self.usage[prefix + "tokens_in"] += used["prompt_tokens"]
            self.usage[prefix + "tokens_out"] += used["completion_tokens"]
        return record["content"]

    @cached_property
    def client(self) -> Any:
        import openai
        cfg, parts = self.config, urlsplit(self.config.url)
        key, host = os.environ.get(cfg.api_key_env), parts.hostname or ""
        if not key and host not in LOCAL_HOSTS:
            name = cfg.api_key_env if re.fullmatch(r"[A-Z_][A-Z0-9_]*", cfg.api_key_env) else "it names"
            raise ValueError(f"--api-key-env: the environment variable {name} is not set (export the key)")
        common = {"api_key": key or "unused", "timeout": cfg.timeout_s, "max_retries": cfg.max_retries}
        retries = logging.getLogger("openai._base_client")  # openai's own retry line: say what a wait is for
        for old in [h for h in retries.handlers if h.get_name() == __name__]:  # a past run's stderr
            retries.removeHandler(old)
        if not retries.handlers:  # unless the user configured it
            handler = logging.StreamHandler(sys.stderr)
            handler.set_name(__name__)
            handler.addFilter(lambda r: r.getMessage().startswith("Retrying request"))
            handler.setFormatter(logging.Formatter("judge: %(message)s (a rate limit, timeout or error)"))
            retries.addHandler(handler)
            retries.setLevel(logging.INFO)
        if host.endswith(".openai.azure.com"):
            version = parse_qs(parts.query).get("api-version", [AZURE_API_VERSION])[0]
            endpoint = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
            return openai.AzureOpenAI(azure_endpoint=endpoint, api_version=version, **common)
        return openai.OpenAI(base_url=cfg.url, **common)


def balanced_accuracy(labels: list[int], verdicts: list[int]) -> float:
    pos = [v for label, v in zip(labels, verdicts, strict=True) if label == 1]
    neg = [1 - v for label, v in zip(labels, verdicts, strict=True) if label == 0]
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


def shuffled_heldout(sample: dict[str, Any], feature: int, seed: int) -> list[dict[str, Any]]:
    heldout = list(sample["heldout"])
    random.Random(seed * 1_000_003 + feature).shuffle(heldout)
    return heldout


def judge_feature(judge: Judge, contexts: C.InterpretContexts, feature: int, protocol: str,
                  seed: int) -> FeatureInterpretation:
    shares = contexts.layer_shares[feature]
    r = FeatureInterpretation(feature, shares, contexts.hook_names[shares.index(max(shares))])
    if protocol in ("paper", "both"):
        parsed, raw = judge.ask(C.paper_messages(contexts.features[feature]), C.parse_paper)
        if parsed:
            r.paper, r.category, r.score, r.explanation = "scored", *parsed.values()
        else:
            r.paper, r.unparsed["paper"] = "unparsed", raw
    if protocol in ("detection", "both"):
        sample = contexts.detection[feature]  # type: ignore[index]
        heldout = shuffled_heldout(sample, feature, seed)
        labels = [h["label"] for h in heldout]
        r.heldout = {"activating": sum(labels), "non_activating": len(labels) - sum(labels),
                     **Counter(f"quantile_{h['quantile']}" for h in heldout if h["quantile"] is not None)}
        r.detection_explanation, raw = judge.ask(C.explain_messages(sample["explain"]), C.parse_explanation)
        if r.detection_explanation is None:
            r.detection, r.unparsed["explanation"] = "unparsed", raw
        elif 0 in (r.heldout["activating"], r.heldout["non_activating"]):
            r.detection = "no_heldout"  # balanced accuracy needs both kinds
        else:
            messages = C.detect_messages(r.detection_explanation, [h["text"] for h in heldout])
            verdicts, raw = judge.ask(messages, lambda a: C.parse_detection(a, len(heldout)))
            if verdicts:
                r.detection, r.detection_accuracy = "scored", round(balanced_accuracy(labels, verdicts), 4)
            else:
                r.detection, r.unparsed["verdicts"] = "unparsed", raw
    return r


def plan(contexts: C.InterpretContexts, features: list[int], protocol: str, model: str, log: Any) -> None:
    prompts = [C.paper_messages(contexts.features[f]) for f in features if protocol in ("paper", "both")]
    for f in features if protocol in ("detection", "both") else []:  # a typical explanation's length
        sample = contexts.detection[f]  # type: ignore[index]
        prompts += [C.explain_messages(sample["explain"]),
                    C.detect_messages("x" * 80, [h["text"] for h in sample["heldout"]])]
    tokens_in, tokens_out = sum(approx_tokens(p) for p in prompts), MAX_TOKENS * len(prompts)
    per = {"paper": "1", "detection": "2", "both": "3"}[protocol]
    prompt = "\n".join(f"[{m['role']}]\n{m['content']}" for m in prompts[0])
    log(f"dry run: nothing sent. One full prompt:\n{prompt}\n\nrequests: {len(prompts)} ({len(features)} "
        f"features x {per}; +1 for each unparsable answer)\nestimated tokens: ~{tokens_in} in, "
        f"<= {tokens_out} out; estimated cost at most {estimated_cost(model, tokens_in, tokens_out)[1]}")


def interpret_features(sae: Any = None, model: Any = None, *, judge: JudgeConfig, out: str | Path,
                       tokens: Any = None, contexts: C.InterpretContexts | str | Path | None = None,
                       n_features: int = 100, protocol: str = "paper", seed: int = 0, dry_run: bool = False,
                       log: Any = print) -> InterpretationResult | None:
    """`contexts`: given, a JSON path (the SAE names the layers) or None (computed from `tokens`)."""
    out = Path(out)
    if isinstance(contexts, (str, Path)):
        contexts = C.read_contexts(contexts, list(sae.cfg.hook_names))
    elif contexts is None:
        contexts = C.compute_contexts(sae, model, tokens, seed=seed)
        if not dry_run:  # a dry run writes nothing
            C.write_contexts(contexts, out / "interpret_contexts.json")
    if not contexts.features or (protocol != "paper" and contexts.detection is None):
        raise ValueError("--contexts has no detection excerpts (evaluate's feature_contexts.json has the "
                         "paper's only): use --protocol paper, or omit --contexts" if contexts.features else
                         f"no latent counts as a feature on these tokens ({contexts.n_latents_with_contexts} "
                         "latents had contexts, none > 4 above the activation threshold): nothing to judge")
    counted = sorted(contexts.features)
    features = sorted(random.Random(seed).sample(counted, min(n_features, len(counted))))
    if dry_run:
        return plan(contexts, features, protocol, judge.model, log)
    client = Judge(judge, out / "judge_cache")
    pool = ThreadPoolExecutor(max_workers=judge.concurrency)
    futures = [pool.submit(judge_feature, client, contexts, f, protocol, seed) for f in features]
    try:
        judged = [f.result() for f in futures]
    except KeyboardInterrupt:
        client.stop()
        kept = len(list(client.cache_dir.glob("*.json")))
        raise RunInterrupted(f"interpret stopped; nothing more was sent. {kept} judge answers are kept in "
                             f"{client.cache_dir}: the same command resumes without paying again") from None
    finally:  # a refusal or a stop: nothing more is sent, no wait for the requests in flight
        client.stopped = True
        pool.shutdown(wait=False, cancel_futures=True)
    u = client.usage
    cost, cost_text = estimated_cost(judge.model, u["tokens_in"], u["tokens_out"])
    result = InterpretationResult(protocol, judge.model, judge.public_url, seed, contexts.hook_names,
                                  len(counted), judged, u, cost)
    json_path, png = write_result(result, out)
    log(f"judge: {u['requests']} requests sent ({u['tokens_in']} tokens in, {u['tokens_out']} out), "
        f"{u['cached']} answers reused from {out / 'judge_cache'}; estimated cost of this run {cost_text}\n"
        f"interpretability written to {json_path} and {png}")
    return result
