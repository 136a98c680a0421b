"""GSM8K number substitution: the rebuilt calculator graph reproduces every answer, new numbers stay plausible."""

import json
import random
from fractions import Fraction

import pytest

from primer.audit import gsm_numbers as G

NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
ROBE = {
    "question": "A robe takes 10 bolts of blue fiber and a fifth of that much white fiber.  How many bolts in total does it take?",
    "answer": "It takes 10/5=<<10/5=2>>2 bolts of white fiber\nSo the total amount of fabric is 10+2=<<10+2=12>>12 bolts of fabric\n#### 12",
}


def test_rebuild_links_leaves_results_and_constants():
    rb = G.rebuild(NATALIA)
    assert rb.variable == [Fraction(48)]  # "half" makes 2 a constant, not a leaf
    assert rb.final_value == 72 and rb.values[rb.final] == 72
    v = G.substitute(rb, random.Random(0))
    assert v is not None
    new = Fraction(v["substitution"]["48"])
    assert str(int(new)) in v["question"] and "48" not in v["question"]
    assert Fraction(v["target"]) == new + new / 2
    assert v["answer"].endswith(f"#### {v['target']}")


def test_constant_divisor_stays_and_integral_results_stay_integral():
    rb = G.rebuild(ROBE)  # 10/5: the 5 is "a fifth", a constant
    kinds = sorted(k for k, _ in rb.nodes[0].refs.values())
    assert kinds == ["const", "leaf"]
    v = G.substitute(rb, random.Random(1))
    new = Fraction(v["substitution"]["10"])
    assert Fraction(v["target"]) == new + new / 5 and new % 5 == 0  # integral result kept


def test_second_use_in_one_annotation_is_a_constant():
    item = {"question": "Tom has 6 boxes of 4 pens. He gives away a sixth of the boxes. How many boxes are left?",
            "answer": "He gives away 6/6=<<6/6=1>>1 box.\nHe has 6-1=<<6-1=5>>5 boxes left.\n#### 5"}
    rb = G.rebuild(item)
    assert sorted(k for k, _ in rb.nodes[0].refs.values()) == ["const", "leaf"]


def test_unrebuildable_items_give_a_reason():
    with pytest.raises(G.RebuildError) as e:
        G.rebuild({"question": "What is 3 plus 4?", "answer": "It is 7.\n#### 7"})
    assert e.value.reason == "no_annotations"


def _test_set(data_dir):
    return [json.loads(line) for line in open(data_dir / "gsm8k" / "test.jsonl")]


@pytest.mark.slow
def test_gsm8k_test_coverage_and_unchanged_numbers_reproduce_answers(data_dir):
    items = _test_set(data_dir)
    variants, cov = G.number_variants(items, n_variants=1, seed=0)
    c = cov.to_dict()
    print("GSM8K test number-substitution coverage:", c)
    assert c["total"] == 1319
    assert c["coverage"] >= 0.70, c  # measured 75.7%: 998 of 1319 items get new numbers
    rebuilt = [i for i, v in enumerate(variants) if v]
    for i in random.Random(7).sample(rebuilt, 50):
        rb = G.rebuild(items[i])
        gold = G.parse_number(items[i]["answer"].split("####")[-1])
        assert G._compute(rb.nodes, {})[rb.final] == gold, items[i]["question"]
    # The new items are self-consistent: rebuilding a variant from its own text gives its new answer.
    ok = checked = 0
    for i in random.Random(8).sample([i for i, v in enumerate(variants) if v], 50):
        v = variants[i][0]
        assert G.parse_number(v["target"]) >= 0 or G.parse_number(items[i]["answer"].split("####")[-1]) < 0
        try:
            rb = G.rebuild(v)
        except G.RebuildError:
            continue
        checked += 1
        ok += rb.values[rb.final] == G.parse_number(v["target"])
    assert checked >= 30 and ok == checked


def _rebuilds(item) -> bool:
    try:
        G.rebuild(item)
        return True
    except G.RebuildError:
        return False


def test_new_numbers_keep_integers_and_signs(data_dir):
    items = _test_set(data_dir)[:300]
    rng = random.Random(3)
    for it in items:
        try:
            rb = G.rebuild(it)
        except G.RebuildError:
            continue
        v = G.substitute(rb, rng)
        if v is None:
            continue
        new = G._compute(rb.nodes, {Fraction(k): Fraction(x) for k, x in v["substitution"].items()})
        for old, nv in zip(rb.values, new):
            if old.denominator == 1:
                assert nv.denominator == 1
            if old >= 0:
                assert nv >= 0
