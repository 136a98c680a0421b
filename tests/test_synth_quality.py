"""Degenerate-output rejection and the diversity figures."""

import math

from primer.synth import quality as Q

GOOD = (
    "Plants make their own food through photosynthesis. Inside each leaf, tiny structures called "
    "chloroplasts capture sunlight. The plant takes in water through its roots and carbon dioxide "
    "from the air through small pores. Using the energy of light, it joins these into glucose, a "
    "sugar that feeds growth, and releases oxygen as a by-product. For example, a sunflower turns "
    "toward the sun during the day, and a pond weed gives off visible bubbles of oxygen on a bright "
    "afternoon. Without photosynthesis there would be no food chains and almost no oxygen to breathe."
)


def test_good_text_passes():
    assert Q.check(GOOD, "stop") is None


def test_reasons():
    rules = Q.QualityRules(min_words=20)
    assert Q.check("", "stop", rules) == "empty"
    assert Q.check("Plants grow.", "stop", rules) == "too_short"
    assert Q.check("I'm sorry, but I cannot help with that request. " + GOOD, "stop", rules) == "refusal"
    assert Q.check("As an AI language model, I " + GOOD, "stop", rules) == "refusal"
    loop = "The cell is the basic unit of life and the cell is small. " * 12
    assert Q.check(loop, "stop", rules) == "repetitive"
    lines = "\n".join(["Step one is to add the numbers together carefully."] * 6 + ["Then check the answer once more."])
    assert Q.check(lines, "stop", Q.QualityRules(min_words=5)) == "repetitive"
    assert Q.check(GOOD, "length", rules) is None
    assert Q.check(GOOD, "length", Q.QualityRules(min_words=20, reject_truncated=True)) == "truncated"
    assert Q.check("", "error", rules, error="HTTP 400") == "teacher_error"


def test_repeated_ngram_frac():
    assert Q.repeated_ngram_frac("a b c d e f g h i j".split()) == 0
    assert Q.repeated_ngram_frac(("x y z w v " * 10).split()) > 0.9


def test_near_dup_rate():
    base = [f"Document {i} is about topic number {i} and says {' '.join(str(i * 7 + k) for k in range(40))}" for i in range(30)]
    rate, n = Q.near_dup_rate(base)
    assert n == 0 and rate == 0
    near = base[3].replace("is about", "is all about")
    rate, n = Q.near_dup_rate(base + [near, base[5]])
    assert n == 2 and math.isclose(rate, 2 / 32)


def test_distinct_ngram_ratio():
    assert Q.distinct_ngram_ratio(["a b c d", "e f g h"], 2) == 1.0
    assert Q.distinct_ngram_ratio(["a b c", "a b c"], 3) == 0.5
