"""Metrics and standard errors as lm-eval defines them."""

import math
import random

from primer.eval import metrics as M


def test_mean_stderr_is_sample_std_over_sqrt_n():
    xs = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
    p = 0.6
    assert math.isclose(M.mean_stderr(xs), math.sqrt(p * (1 - p) * 10 / 9) / math.sqrt(10))


def test_pooled_stderr_matches_the_concatenation():
    rnd = random.Random(0)
    a = [float(rnd.random() < 0.3) for _ in range(400)]
    b = [float(rnd.random() < 0.3) for _ in range(900)]
    pooled = M.pooled_sample_stderr([M.mean_stderr(a), M.mean_stderr(b)], [len(a), len(b)])
    assert abs(pooled - M.mean_stderr(a + b)) < 0.1 * M.mean_stderr(a + b)


def test_acc_norm_uses_characters_and_acc_bytes_uses_bytes():
    # raw favours choice 0; per character favours 1; per byte (é = 2 bytes) favours 0 again
    s = M.multiple_choice([-2.0, -3.0], ["éé", "abcd"], gold=1)
    assert s == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 0.0}


def test_exact_match_and_gsm8k_filters():
    resp = "She makes 9 * 2 = $18 every day.\n#### 18\n\nQuestion:"
    gold = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n#### 18"
    strict = M.regex_extract(resp, M.GSM8K_STRICT)
    flex = M.regex_extract("the answer is 1,234.", M.GSM8K_FLEXIBLE, group_select=-1)
    assert strict == "18" and flex == "1,234."
    assert M.exact_match(strict, gold, ignore_case=True, regexes_to_ignore=M.GSM8K_IGNORE) == 1.0
    assert M.exact_match(flex, "#### 1234", ignore_case=True, regexes_to_ignore=M.GSM8K_IGNORE) == 1.0
    assert M.regex_extract("no number", M.GSM8K_STRICT) == "[invalid]"
    assert M.exact_match("The Onion!", ["onion", "the onion"], ignore_case=True, ignore_punctuation=True) == 1.0


def test_squad_em_f1():
    assert M.squad_em("The Denver Broncos", ["Denver Broncos"]) == 1.0
    assert math.isclose(M.squad_f1("Denver Broncos won", ["Denver Broncos"]), 0.8)
    assert M.squad_f1("Carolina", ["Denver Broncos", "Broncos"]) == 0.0


def test_pass_at_k_unbiased_estimator():
    assert M.pass_at_k(10, 0, 1) == 0.0 and M.pass_at_k(10, 10, 1) == 1.0
    assert math.isclose(M.pass_at_k(10, 3, 1), 0.3)
    assert math.isclose(M.pass_at_k(5, 2, 2), 1 - math.comb(3, 2) / math.comb(5, 2))


def test_perplexities():
    items = [(-10.0, 5), (-20.0, 5)]
    assert math.isclose(M.weighted_perplexity(items), math.exp(3.0))
    assert math.isclose(M.bits_per_byte(items), 3.0 / math.log(2))
    assert math.isclose(M.perplexity([-1.0, -3.0]), math.exp(2.0))
    assert M.bootstrap_stderr(M.perplexity, [-1.0, -2.0, -3.0, -0.5], iters=100) > 0
    assert M.count_words(" = Robert  Boulter = \n") == 6
