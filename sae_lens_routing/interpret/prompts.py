"""The judge's prompts (the RouteSAE paper's rubric; detection: explain, then 0/1 verdicts) and strict
parsers: anything but the asked format is None, counted unparsed rather than guessed."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any

SYSTEM = "You are an assistant that helps explain the latent features that language models learn."
CATEGORIES = ("low-level", "high-level", "undiscernible")

PAPER_RUBRIC = """\
We are studying the features of a sparse autoencoder trained on a language model. Each feature activates on \
some tokens of a text; a token's activation value says how strongly that token relates to the feature \
(higher means a stronger association). A feature belongs to one of three categories:
A. Low-level features: word-level meaning, telling apart the senses of a polysemous word (e.g. "crushed \
things", "Europe").
B. High-level features: patterns formed over a longer span of text (e.g. "enumeration", "one of the \
[number/quantifier]").
C. Undiscernible features: noise, or patterns with no relevance.

Classify the feature below as low-level, high-level or undiscernible, and give it a monosemanticity score \
with this rubric for activation consistency:
5: a clear pattern, no deviating example
4: a clear pattern, one or two deviating examples
3: a clear overall pattern, but quite a few examples that do not fit it
2: a broad consistent theme, but no structure
1: no discernible pattern

The feature's activations (the activating token is marked <<like this>> in its context):

"""

PAPER_FORMAT = """\
Answer in exactly this format, three lines:
Feature category: [Low-level/High-level/Undiscernible]
Score: [5/4/3/2/1]
Explanation: [your brief explanation]"""

_PAPER_ANSWER = re.compile(
    r"^[ \t]*Feature category:[ \t]*(?P<category>low-level|high-level|undiscernible)[ \t]*\n"
    r"[ \t]*Score:[ \t]*(?P<score>[1-5])[ \t]*\n"
    r"[ \t]*Explanation:[ \t]*(?P<explanation>\S.*)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def chat(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def paper_messages(contexts: Sequence[dict[str, Any]]) -> list[dict[str, str]]:  # every context of a feature
    lines = "".join(f"Token: {c['token']} | Activation: {c['activation']} | Context: {c['context']}\n\n"
                    for c in contexts)
    return chat(PAPER_RUBRIC + lines + PAPER_FORMAT)


def parse_paper(answer: str) -> dict[str, Any] | None:
    match = _PAPER_ANSWER.search(answer)
    if match is None or len(re.findall(r"Feature category:", answer, re.IGNORECASE)) != 1:
        return None
    return {"category": match["category"].lower(), "score": int(match["score"]),
            "explanation": match["explanation"].strip()}


EXPLAIN_PROMPT = """\
Below are text excerpts where one feature of a sparse autoencoder trained on a language model activates \
strongly. In each excerpt the token where it activates is marked <<like this>>, and the activation is given \
after the excerpt. Explain in one short sentence what the feature responds to, precisely enough that someone \
who reads only your explanation can tell which new texts make it activate.

{examples}
Answer in exactly one line:
Explanation: [your explanation]"""

DETECT_PROMPT = """\
A feature of a sparse autoencoder trained on a language model is explained as:
"{explanation}"

Below are {n} numbered text excerpts. The feature activates somewhere in some of them and nowhere in the \
others. Going by the explanation, decide for each excerpt whether the feature activates in it.

{examples}
Answer with a JSON list of {n} integers in excerpt order, 1 if the feature activates in the excerpt and 0 if \
not (e.g. [1, 0, 0, 1]), and nothing else."""

_EXPLANATION = re.compile(r"^[ \t]*Explanation:[ \t]*(?P<text>\S[^\n]*)", re.IGNORECASE | re.MULTILINE)
_LIST = re.compile(r"\[[^\[\]]*\]")


def explain_messages(examples: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    body = "".join(f"Excerpt {i}: {e['text']} (activation {e['activation']})\n"
                   for i, e in enumerate(examples, 1))
    return chat(EXPLAIN_PROMPT.format(examples=body))


def parse_explanation(answer: str) -> str | None:
    found = _EXPLANATION.findall(answer)
    return found[0].strip() if len(found) == 1 else None


def detect_messages(explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
    body = "".join(f"Excerpt {i}: {t}\n" for i, t in enumerate(texts, 1))
    return chat(DETECT_PROMPT.format(explanation=explanation, n=len(texts), examples=body))


def parse_detection(answer: str, n: int) -> list[int] | None:
    """The single JSON list of exactly `n` 0/1 integers in the answer, else None."""
    found = _LIST.findall(answer)
    with contextlib.suppress(json.JSONDecodeError):
        values = json.loads(found[0]) if len(found) == 1 else None
        if values is not None and len(values) == n and all(type(v) is int and v in (0, 1) for v in values):
            return values
    return None
