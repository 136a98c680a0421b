"""IFEval agreement: primer's four numbers vs lm-evaluation-harness's `ifeval` task on the same generations.

primer generates (greedy, the model's chat template) and scores; then lm-eval runs its own ifeval
task config (pointed at the same input_data.jsonl, `apply_chat_template=True`) with a model that
replays primer's replies for the exact prompt text lm-eval renders. A prompt lm-eval renders
differently finds no reply and fails the run, so equal verdicts mean: same prompt text, same
checkers, same aggregation.

    python bench/ifeval.py --model bundled --data-dir ../shared/benchmarks --limit 40 --max-gen-tokens 256
    python bench/ifeval.py --model bundled --data-dir ../shared/benchmarks --device cuda   # all 541, 1,280 tokens

Ends with one JSON line: {"ours": {4 numbers}, "ref": {lm-eval's}, "verdicts_equal": k, "verdicts": n, ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from lm_eval.api.model import LM


class ReplayLM(LM):
    """An lm-eval model that answers each rendered prompt with the reply primer generated for it."""

    def __init__(self, replies: dict[str, str], tokenizer):
        super().__init__()
        self.replies, self.tok, self.missing = replies, tokenizer, []

    @property
    def tokenizer_name(self) -> str:
        return "primer-replay"

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        return self.tok.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def generate_until(self, requests):
        out = []
        for r in requests:
            ctx = r.args[0]
            if ctx not in self.replies:
                self.missing.append(ctx)
            out.append(self.replies.get(ctx, ""))
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


def without_default_system(template: str) -> str:
    """The chat template without the branch that inserts a system prompt when the conversation has none."""
    import re

    out = re.sub(r"\{% if loop\.first and messages\[0\]\['role'\] != 'system' %\}.*?\{% endif %\}", "", template,
                 flags=re.DOTALL)
    if out == template:
        raise SystemExit("--system none: this chat template has no default-system-prompt branch to remove")
    return out


def lmeval_ifeval(replies: dict[str, str], tokenizer, docs: list[dict], work: Path) -> tuple[dict, list[dict]]:
    """lm-eval's ifeval on `docs` with replayed replies: (its four numbers, its per-document verdicts)."""
    from primer.eval.ifeval import checkers

    checkers()  # Punkt installed offline and langdetect seeded before lm-eval imports its checkers
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    path = work / "ifeval.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    tm = TaskManager()
    cfg = tm._factory._load_full_config(tm._entry("ifeval"), None)
    cfg.update(task="ifeval_primer_local", dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": {"train": str(path)}})
    lm = ReplayLM(replies, tokenizer)
    res = simple_evaluate(model=lm, tasks=[cfg], num_fewshot=0, bootstrap_iters=0, task_manager=tm,
                          apply_chat_template=True, log_samples=True, verbosity="ERROR")
    if lm.missing:
        raise SystemExit(f"lm-eval rendered {len(lm.missing)} prompt(s) primer did not send, e.g. {lm.missing[0]!r}")
    from primer.eval.ifeval import METRICS

    numbers = {m: res["results"]["ifeval_primer_local"][f"{m},none"] for m in METRICS}
    samples = sorted(res["samples"]["ifeval_primer_local"], key=lambda s: s["doc_id"])
    return numbers, samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N prompts (default: all 541)")
    ap.add_argument("--max-gen-tokens", type=int, default=None, help="cap the 1,280-token budget (CPU runs)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--output", default=None, help="write the summary JSON (and primer's results beside it)")
    ap.add_argument("--system", choices=["default", "none"], default="default",
                    help="none: drop the default system prompt the chat template inserts (SmolLM2's 'You are a "
                         "helpful AI assistant named SmolLM...'), to measure what it does to the score")
    ap.add_argument("--fast", action="store_true",
                    help="generate with the int4/int8 CPU decoder (PrimerLM.use_fast_decoder), not the fp32 forward")
    ap.add_argument("--cache", default="none", help="eval's answer cache (sqlite path): a long run resumes from it")
    ap.add_argument("--replay", default=None, help="score the generations of an earlier --output file again, no model")
    ap.add_argument("--cap-tokens", type=int, default=None,
                    help="with --replay: cut each reply to its first N tokens first (a greedy reply's first N tokens "
                         "are the reply a run capped at N would give), to measure what a shorter budget does")
    args = ap.parse_args(argv)
    import torch

    from primer.eval.ifeval import METRICS
    from primer.eval.lm import PrimerLM
    from primer.eval.runner import EvalConfig, evaluate
    from primer.eval.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    ifeval = get_task("ifeval")
    if args.replay:
        from primer.eval.runner import aggregate
        from primer.weights.load import load_model

        old = json.loads(Path(args.replay).read_text())
        records, secs = old["samples"], old["generate_s"]
        docs = ifeval.docs(Path(args.data_dir))[: len(records)]
        tok = load_model(args.model, decode_only=True).tokenizer
        if args.cap_tokens:
            for r in records:
                r["responses"] = [tok.decode(tok.encode(x, add_special_tokens=False)[: args.cap_tokens])
                                  for x in r["responses"]]
        for r, d in zip(records, docs):
            r["scores"] = ifeval.score(d, r["responses"])
        n, metrics = len(records), aggregate(ifeval, [r["scores"] for r in records])
        args.max_gen_tokens, args.system = args.cap_tokens or old.get("max_gen_tokens"), old.get("system", "default")
        args.fast = old.get("decoder") == "int4/int8"
        if args.system == "none":
            tok.chat_template = without_default_system(tok.chat_template)
    else:
        lm = PrimerLM.load(args.model, batch_size=args.batch_size, max_length=2048, device=args.device)
        if args.system == "none":
            lm.tok.chat_template = without_default_system(lm.tok.chat_template)
        if args.fast:
            lm.use_fast_decoder()
        cfg = EvalConfig(tasks=["ifeval"], limit=args.limit, data_dir=Path(args.data_dir), cache=Path(args.cache),
                         log_samples=True, max_gen_tokens=args.max_gen_tokens)
        t0 = time.perf_counter()
        ours = evaluate(lm, cfg)
        secs = time.perf_counter() - t0
        n, metrics = ours.tasks["ifeval"].n, ours.tasks["ifeval"].metrics
        records = ours.samples["ifeval"]
        docs = ifeval.docs(Path(args.data_dir))[: args.limit]
        tok = lm.tok
    replies = {r["requests"][0][0]: r["responses"][0] for r in records}
    with tempfile.TemporaryDirectory(prefix="primer-bench-ifeval-") as tmp:
        theirs, samples = lmeval_ifeval(replies, tok, docs, Path(tmp))
    from primer.eval.ifeval import RANDOM_KEYS

    same = [all(r["scores"][m] == s[m] for m in METRICS) for r, s in zip(records, samples)]
    coin = [d["key"] in RANDOM_KEYS for d in docs]
    equal = sum(x for x, c in zip(same, coin) if not c)
    summary = {
        "bench": "ifeval", "model": args.model, "n": n, "device": args.device,
        "max_gen_tokens": args.max_gen_tokens or 1280, "system": args.system,
        "decoder": "int4/int8" if args.fast else "fp32", "generate_s": round(secs, 1),
        "ours": {m: round(100 * metrics[m], 2) for m in METRICS},
        "ref": {m: round(100 * theirs[m], 2) for m in METRICS},
        "verdicts_equal": equal, "verdicts": len(records) - sum(coin),
        "random_letter_prompts": {"n": sum(coin), "equal": sum(x for x, c in zip(same, coin) if c)},
        "card_avg_prompt_inst_strict": round(50 * (metrics["prompt_level_strict_acc"]
                                                   + metrics["inst_level_strict_acc"]), 2),
    }
    summary["ratio"] = 1.0 if equal == len(records) - sum(coin) else 0.0
    if args.output:
        Path(args.output).write_text(json.dumps({**summary, "samples": records}, indent=1) + "\n")
    print(json.dumps(summary))
    return 0 if summary["ratio"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
