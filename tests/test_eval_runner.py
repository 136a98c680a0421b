"""The model interface (lm-eval tokenization, shared prefixes, rolling windows, generation) and the
runner (cache, results JSON, table, CLI) on the tiny debug model with a byte-level tokenizer."""

import json

import pytest
import torch

from primer.eval.lm import PrimerLM
from primer.eval.runner import EvalConfig, run, table
from primer.model.transformer import ModelConfig, Transformer


class ByteTok:
    """Bytes as ids (0-255), id 256 = BOS/EOS; no special tokens are added on encode."""

    bos_id = eos_id = 256
    stop_ids = {256}

    def encode(self, text, add_special_tokens=True):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name("debug", block_size=256))
    return PrimerLM(model, ByteTok(), name="debug", batch_size=3)


def test_encode_pair_moves_trailing_space_to_the_continuation(lm):
    ctx, cont = lm.encode_pair("Answer: ", "yes")
    assert bytes(ctx) == b"Answer:" and bytes(cont) == b" yes"
    ctx, cont = lm.encode_pair("", "hello")
    assert ctx == [256] and bytes(cont) == b"hello"


def full_forward_score(lm, ctx, cont):
    """The plain reference: one causal forward over context + continuation (lm-eval's truncation)."""
    row = (ctx + cont)[-(lm.max_length + 1):][:-1]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([row])).float(), dim=-1)[0, len(row) - len(cont):]
    target = torch.tensor(cont)
    return logp.gather(-1, target[:, None]).sum().item(), bool((logp.argmax(-1) == target).all())


def test_tree_packed_scoring_equals_a_plain_forward_per_request(lm):
    # three questions sharing contexts (tree rows of different lengths: padding), a lone request, a
    # context longer than the window (truncated on the left, as lm-eval does) and an empty continuation
    long_ctx = "w" * 300
    reqs = [("Question: which?\nAnswer:", " the first one"), ("Question: which?\nAnswer:", " b"),
            ("Question: which?\nAnswer:", " the third"), ("Other context", " x"), ("Q: 2+2?\nA:", " 4"),
            ("Q: 2+2?\nA:", " five"), (long_ctx, " tail"), (long_ctx, " end"), ("No answer", "")]
    got = lm.loglikelihood(reqs)
    for (c, x), (ll, greedy) in zip(reqs, got):
        ctx, cont = lm.encode_pair(c, x)
        if not cont:
            assert (ll, greedy) == (0.0, True)
            continue
        ref_ll, ref_greedy = full_forward_score(lm, ctx, cont)
        assert abs(ll - ref_ll) < 1e-4 and greedy == ref_greedy, (c, x, ll, ref_ll)
    # the same requests one at a time give the same numbers (a choice never sees the other choices)
    for r, (ll, greedy) in zip(reqs, got):
        (one, g1), = lm.loglikelihood([r])
        assert abs(one - ll) < 1e-4 and g1 == greedy


def test_rolling_windows_predict_every_token_once(lm):
    text = "abcdefghij" * 60  # 600 tokens, longer than the 256-token window
    wins = lm.rolling_windows(text)
    predicted = [t for _, cont in wins for t in cont]
    assert predicted == list(text.encode())
    assert all(len(c) + len(p) - 1 <= lm.max_length for c, p in wins)
    lm_eval_utils = pytest.importorskip("lm_eval.utils")
    ref = [lm_eval_utils.make_disjoint_window(w) for w in lm_eval_utils.get_rolling_token_windows(
        token_list=list(text.encode()), prefix_token=256, max_seq_len=lm.max_length, context_len=1)]
    assert [(list(a), list(b)) for a, b in ref] == wins
    (total,) = lm.loglikelihood_rolling([text])
    assert total < 0


def test_generate_batched_equals_one_by_one_and_stops(lm):
    prompts = ["def f(x):", "Once upon a time", "1 2 3"]
    batched = lm.generate(prompts, stop=["\n\n"], max_tokens=12)
    lm1 = PrimerLM(lm.model, ByteTok(), name="debug", batch_size=1)
    single = [lm1.generate([p], stop=["\n\n"], max_tokens=12)[0] for p in prompts]
    assert batched == single
    assert all("\n\n" not in g for g in batched)
    sampled = lm.generate(prompts, max_tokens=8, temperature=1.0, seed=3)
    assert sampled == lm.generate(prompts, max_tokens=8, temperature=1.0, seed=3)


def test_fast_decoder_answers_get_their_own_cache_key(lm):
    """Long generation runs may use the int4/int8 decoder; its replies can differ from the fp32 forward's,
    so they must never be served from (or into) the cache as the fp32 model's answers."""
    fast = PrimerLM(lm.model, ByteTok(), name="debug", batch_size=3)
    fast.use_fast_decoder()
    assert fast.fingerprint != lm.fingerprint and fast.fast == "auto" and lm.fast is False
    out = fast.generate(["def f(x):", "1 2 3"], max_tokens=6)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def _fixture_data(tmp_path):
    (tmp_path / "piqa").mkdir(parents=True)
    docs = [{"goal": f"How do I do thing {i}?", "sol1": "Carefully.", "sol2": "With a hammer, loudly."} for i in range(6)]
    (tmp_path / "piqa" / "valid.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "piqa" / "valid-labels.txt").write_text("0\n1\n0\n1\n0\n1\n")
    (tmp_path / "lambada").mkdir()
    (tmp_path / "lambada" / "lambada_openai.jsonl").write_text(
        "".join(json.dumps({"context": f"The cat number {i} sat on the", "continuation": "mat"}) + "\n" for i in range(4)))
    return tmp_path


def test_run_writes_results_and_the_cache_skips_finished_items(lm, tmp_path):
    data = _fixture_data(tmp_path / "data")
    cfg = EvalConfig(tasks=["piqa", "lambada"], limit=5, data_dir=data, cache=tmp_path / "cache.sqlite", log_samples=True)
    out = tmp_path / "results.json"
    res = run(lm, cfg, output=out, progress=False)
    saved = json.loads(out.read_text())
    assert saved["model"]["name"] == "debug" and saved["task_versions"] == {"piqa": "1.0", "lambada": "1.0"}
    assert "torch" in saved["environment"] and saved["config"]["limit"] == 5
    piqa = saved["tasks"]["piqa"]
    assert piqa["n"] == 5 and piqa["computed"] == 5 and 0 <= piqa["metrics"]["acc"] <= 1
    assert piqa["metrics"]["acc_stderr"] > 0 and len(saved["samples"]["piqa"]) == 5
    assert saved["samples"]["piqa"][0]["requests"][1] == ["Question: How do I do thing 0?\nAnswer:", " With a hammer, loudly."]
    assert saved["tasks"]["lambada"]["metrics"]["perplexity"] > 1
    again = run(lm, cfg, progress=False)
    assert again.tasks["piqa"].computed == 0 and again.tasks["lambada"].computed == 0
    assert again.tasks["piqa"].metrics == res.tasks["piqa"].metrics
    text = table(res)
    assert "| piqa" in text and "acc_norm" in text and "perplexity" in text


def test_cli_errors_are_one_line(tmp_path, capsys):
    from primer.cli import main

    assert main(["eval", "bundled", "--tasks", "piqa,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'nope'" in err and "hellaswag" in err
    assert main(["eval", "bundled", "--tasks", "list"]) == 0
    assert "mmlu_cloze" in capsys.readouterr().out


class ScriptedLM:
    """Returns canned completions, to test the scoring of generative tasks end to end."""

    name, fingerprint = "scripted", "scripted"

    def __init__(self, completions):
        self.completions = completions

    def generate(self, prompts, stop, max_tokens, temperature=0.0, seed=0):
        return [self.completions(p) for p in prompts]


def test_code_tasks_run_in_the_sandbox(data_dir, tmp_path):
    from primer.eval.tasks import get_task

    he = get_task("humaneval")
    by_prompt = {d["prompt"]: d["canonical_solution"] for d in he.docs(data_dir)[:3]}
    lm = ScriptedLM(lambda p: by_prompt.get(p, "    return None\n"))
    res = run(lm, EvalConfig(tasks=["humaneval"], limit=3, data_dir=data_dir, cache="none"), progress=False)
    assert res.tasks["humaneval"].metrics["pass@1"] == 1.0
    wrong = ScriptedLM(lambda p: "    import os\n    os._exit(0)\n")
    res = run(wrong, EvalConfig(tasks=["humaneval"], limit=2, data_dir=data_dir, cache="none"), progress=False)
    assert res.tasks["humaneval"].metrics["pass@1"] == 0.0
    code = ScriptedLM(lambda p: "    eggs = 16 - 3 - 4\n    return eggs * 2\n")
    res = run(code, EvalConfig(tasks=["gsm8k_code"], limit=1, data_dir=data_dir, cache="none"), progress=False)
    assert res.tasks["gsm8k_code"].metrics["exact_match"] == 1.0
    cot = ScriptedLM(lambda p: " She sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18")
    res = run(cot, EvalConfig(tasks=["gsm8k"], shots=0, limit=1, data_dir=data_dir, cache="none"), progress=False)
    assert res.tasks["gsm8k"].metrics["exact_match,strict-match"] == 1.0


class CountingLM(ScriptedLM):
    """A ScriptedLM with a batch size that records how many prompts each generate call got."""

    def __init__(self, batch_size):
        super().__init__(lambda p: p.upper())
        self.batch_size, self.calls = batch_size, []

    def generate(self, prompts, stop, max_tokens, temperature=0.0, seed=0):
        self.calls.append(len(prompts))
        return super().generate(prompts, stop, max_tokens, temperature, seed)


def test_a_chunk_holds_several_batches_so_a_large_batch_is_filled():
    from primer.eval.runner import Cache, answer_docs

    built = [("generate_until", [(f"q{i}", ["\n"], 8, 0.0, 0)]) for i in range(300)]
    wide = CountingLM(batch_size=64)  # a GPU run: 256 documents per chunk, the decoder refills its 64 slots
    out, computed = answer_docs(wide, built, Cache(None))
    assert wide.calls == [256, 44] and computed == 300 and out[299] == ["Q299"]
    narrow = CountingLM(batch_size=2)  # the CPU default keeps 16-document chunks (what an interruption loses)
    answer_docs(narrow, built[:40], Cache(None))
    assert narrow.calls == [16, 16, 8]
