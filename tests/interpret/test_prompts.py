"""Strict parsing: exactly the asked format is read; anything else is None (counted unparsed, not scored)."""

from __future__ import annotations

import pytest

from sae_lens_routing.interpret.contexts import (
    paper_messages,
    parse_detection,
    parse_explanation,
    parse_paper,
)


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Feature category: Low-level\nScore: 4\nExplanation: the word 'bank'.", ("low-level", 4)),
        ("Sure.\n  feature category: HIGH-LEVEL \nScore: 5\nExplanation: lists\nof items", ("high-level", 5)),
        ("Feature category: Undiscernible\nScore: 1\nExplanation: noise", ("undiscernible", 1)),
    ],
)
def test_paper_answers_in_the_format_are_read(answer, expected):
    parsed = parse_paper(answer)
    assert (parsed["category"], parsed["score"]) == expected and parsed["explanation"]


@pytest.mark.parametrize(
    "answer",
    [
        "Feature category: Low-level\nScore: 6\nExplanation: x",  # score out of range
        "Feature category: Mid-level\nScore: 3\nExplanation: x",  # no such category
        "Feature category: Low-level\nScore: 4/5\nExplanation: x",  # not the asked score format
        "Feature category: Low-level\nExplanation: x\nScore: 4",  # wrong order
        "Feature category: Low-level\nScore: 4\nExplanation:   ",  # empty explanation
        "Feature category: Low-level\nScore: 4\nExplanation: a\nFeature category: High-level\nScore: 2\n"
        "Explanation: b",  # two answers
        "It is a low-level feature with score 4.",
        "",
    ],
)
def test_anything_else_is_unparsed(answer):
    assert parse_paper(answer) is None


def test_paper_prompt_carries_every_context_and_the_rubric():
    contexts = [{"token": "bank", "activation": 21.5, "context": "the <<bank>> of the river"}] * 3
    user = paper_messages(contexts)[-1]["content"]
    assert user.count("Token: bank | Activation: 21.5 | Context: the <<bank>> of the river") == 3
    for line in (
        "5: a clear pattern",
        "1: no discernible pattern",
        "Low-level",
        "High-level",
        "Undiscernible",
    ):
        assert line in user


def test_explanation_and_detection_parsers():
    assert parse_explanation("Explanation: dates in news") == "dates in news"
    assert parse_explanation("Explanation: a\nExplanation: b") is None
    assert parse_explanation("dates in news") is None
    assert parse_detection("[1, 0, 1]", 3) == [1, 0, 1]
    assert parse_detection("Answer: [0,0,1]\n", 3) == [0, 0, 1]
    for bad in (
        "[1, 0]",
        "[1, 0, 2]",
        "[true, false, true]",
        "[1, 0, 1] or [1, 1, 1]",
        "1 0 1",
        "[1, 0, 1.0]",
    ):
        assert parse_detection(bad, 3) is None
