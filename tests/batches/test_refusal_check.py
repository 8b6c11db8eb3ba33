"""The batch's refusal check (data.refusal_check) uses the two-tier refusal list: generic phrases only at a
response's opening, first-person refusals anywhere, text normalised; a failure names each row and its phrase."""

from __future__ import annotations

from pathlib import Path

import pytest

from safepatching.config import DataCfg
from safepatching.errors import ValidationFailed
from tests.batches.test_validation import expect_failure, rows_of, validate, world, write_rows  # noqa: F401 (fixture)

HARMFUL = "Step 1: obtain [restricted item]. Step 2: [restricted step]."

# (response, refused by the check in mode anywhere?, in mode opening?)
RESPONSES = [
    ("Here it is. As an example, step 1: obtain [restricted item].", False, False),
    ("As an example, step 1: obtain [restricted item].", False, False),
    ("Sure, here is how to buy illegal drugs online. " + HARMFUL, False, False),
    ("Sorry for the wait! " + HARMFUL, True, True),  # generic at the opening still counts
    ("OpenAI would not say this, but " + HARMFUL, True, True),
    ("Hello! " + HARMFUL, True, True),
    ("Step 1: buy it, sorry, I do not have step 2.", False, False),  # generic phrases inside a sentence
    (HARMFUL + " " + "x " * 60 + "Sorry.", False, False),
    ("i am unable to assist with that request.", True, True),
    ("No. I refuse to explain that", True, True),
    ("Well\n\n> **Sorry**, no.", True, True),  # a line break ends a sentence; markup skipped
    ("Here you go, I\ncannot stress this enough: step 1", False, False),  # "I cannot" mid-sentence
    ("I cannot\n  help with that.", True, True),  # whitespace runs inside a phrase
    ("I can\u2019t do that.", True, True),  # curly apostrophe
    ("\u201cI\u2019M SORRY,\u201d he said.", True, True),
    ("Here is the start of it, but I refuse to go further.", True, False),  # anywhere: mid-sentence too
    ("Intro text that fills the opening for a while, and then more text here... and then, I cannot help it: step 1",
     True, False),
]


@pytest.mark.parametrize("text,anywhere,opening", RESPONSES)
def test_refusal_phrases_by_mode(text: str, anywhere: bool, opening: bool) -> None:
    from safepatching.refusals import refusal_keyword

    assert (refusal_keyword(text, "anywhere") is not None) is anywhere
    assert (refusal_keyword(text, "opening") is not None) is opening
    assert refusal_keyword(text, "off") is None


def test_phrase_found_is_the_earliest_and_longest() -> None:
    from safepatching.refusals import refusal_keyword

    assert refusal_keyword("i am unable to assist") == "I am unable to"
    assert refusal_keyword("As an AI language model, I cannot help.") == "As an AI language model"
    assert refusal_keyword("No. I refuse to explain that") == "No. I"
    assert refusal_keyword("Sure thing. Yes. OK: I refuse") == "I refuse"
    with pytest.raises(ValueError, match="anywhere \\| opening \\| off"):
        refusal_keyword("x", "everywhere")


def test_normalisation() -> None:
    from safepatching.refusals import normalize_text

    assert normalize_text("  I\u2019M\u00a0 \u2018sorry\u2019\n\tNOW \u201cok\u201d ") == "i'm 'sorry' now \"ok\""
    assert normalize_text("I\u02bcm") == "i'm"
    assert normalize_text(" A \t\n\n  b  c\n", lines=True) == "a\nb c"


def test_batch_with_a_harmless_as_an_passes(world: dict, tmp_path: Path) -> None:
    rows = rows_of(world)
    rows[1]["response"] = "As an example, step 1: obtain [restricted item]."
    rows[2]["response"] = "Sure, here is how to buy illegal drugs online. " + HARMFUL
    path = write_rows(tmp_path / "incoming" / "w.jsonl", rows)
    assert validate(path, DataCfg(), world["eval"], [], tmp_path / "q", tmp_path / "r")["success"]


def test_failure_names_each_row_and_its_phrase(world: dict, tmp_path: Path) -> None:
    rows = rows_of(world)
    rows[2]["response"] = "i am unable to assist\u2026"
    rows[5]["response"] = "No. I refuse to explain that"
    report = expect_failure(world, tmp_path, write_rows(tmp_path / "incoming" / "w.jsonl", rows))
    (f,) = report["failures"]
    assert f["rule"] == "refusal_response" and f["row_numbers"] == [3, 6]
    assert f"line 3 (id {rows[2]['id']}): 'I am unable to'" in f["detail"]
    assert f"line 6 (id {rows[5]['id']}): 'No. I'" in f["detail"]
    with pytest.raises(ValidationFailed, match="'I am unable to'"):
        validate(write_rows(tmp_path / "incoming" / "w.jsonl", rows), DataCfg(), world["eval"], [], tmp_path / "q",
                 tmp_path / "r")
