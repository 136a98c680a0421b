"""primer eval vs lm-evaluation-harness on the same model, the same documents, the same machine.

For each task, the documents primer evaluates (its loaders turn the local files into each
dataset's HF schema) are written to a JSONL file, and lm-eval's *own* task config (prompt,
preprocessing, metrics) is pointed at that file with `dataset_path: json`. lm-eval scores a
transformers model loaded from the same weights: an HF dir exported by `primer.weights.hf.save_hf_dir`
when that exists, else transformers' own GGUF loader on the same .gguf file. Prints both
accuracies per task, the difference, and items/s of each (ours / theirs; medians of --repeats alternating
runs), then one JSON line
{"ours", "ref", "ratio" (items/s ours / lm-eval), "max_abs_diff" (accuracy points), ...}.

    python bench/eval.py --tasks piqa,arc_easy --limit 100 --data-dir ../shared/benchmarks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

LOCAL_SPLIT = {"piqa": "validation", "hellaswag": "validation", "winogrande": "validation", "boolq": "validation",
               "siqa": "validation", "arc_easy": "test", "arc_challenge": "test", "openbookqa": "test"}
LMEVAL_NAME = {"siqa": "social_iqa"}


def lmeval_task_config(tm, ours, path: Path) -> dict:
    """lm-eval's own config for this task, reading `path` (our docs, HF schema) as its eval split."""
    name = LMEVAL_NAME.get(ours.name, ours.name)
    if ours.name.startswith("mmlu_cloze_"):  # lm-eval calls the cloze form mmlu_<subject>_continuation
        name = "mmlu_" + ours.name[len("mmlu_cloze_"):] + "_continuation"
    entry = tm._entry(name)
    if entry is None:
        raise SystemExit(f"lm-eval has no task named {name}")
    cfg = tm._factory._load_full_config(entry, None)
    for k in ("tag", "group", "task_list"):
        cfg.pop(k, None)
    split = "test" if ours.split == "test" else "validation"
    cfg.update(task=f"{name}_primer_local", dataset_path="json", dataset_name=None,
               dataset_kwargs={"data_files": {split: str(path)}}, training_split=None, validation_split=None,
               test_split=None, fewshot_split=None)
    cfg["test_split" if split == "test" else "validation_split"] = split
    cfg.pop("fewshot_config", None)
    return cfg


def hf_model_dir(model: str, work: Path) -> tuple[str, dict]:
    """(pretrained, extra HFLM kwargs) for the same weights primer evaluates."""
    src = Path(model)
    if model == "bundled":
        from primer.weights.bundled import bundled_gguf_path

        src = bundled_gguf_path()
    try:
        from primer.weights.hf import save_hf_dir  # the model-IO stage's exporter, when present
        from primer.eval.lm import _load_any

        m, tok, _ = _load_any(model)
        out = work / "hf"
        save_hf_dir(m, tok, out)
        return str(out), {}
    except ImportError:
        if src.suffix != ".gguf":
            raise SystemExit("primer.weights.hf is not available and the model is not a .gguf file")
        return str(src.parent), {"gguf_file": src.name}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--tasks", default="piqa,arc_easy,arc_challenge,openbookqa,winogrande,hellaswag")
    ap.add_argument("--limit", type=int, default=50, help="first N documents of each task (N per MMLU subject)")
    ap.add_argument("--data-dir", default=os.environ.get("PRIMER_DATA", "../shared/benchmarks"))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side per task (median reported)")
    ap.add_argument("--output", default=None, help="also write the JSON summary here")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from primer.eval.lm import PrimerLM
    from primer.eval.runner import EvalConfig, evaluate
    from primer.eval.tasks import expand

    tasks = expand(args.tasks.split(","))
    tmp = tempfile.TemporaryDirectory(prefix="primer-bench-eval-")  # the HF export is ~0.5 GB: removed at exit
    work = Path(tmp.name)
    ours_lm = PrimerLM.load(args.model, batch_size=args.batch_size, max_length=2048, device=args.device)
    pretrained, hf_kw = hf_model_dir(args.model, work)
    theirs_lm = HFLM(pretrained=pretrained, device=args.device, batch_size=args.batch_size, dtype="float32",
                     max_length=2048, **hf_kw)
    tm = TaskManager()
    rows, summary = [], {"bench": "eval", "model": args.model, "limit": args.limit, "device": args.device, "tasks": {}}
    for task in tasks:
        docs = task.docs(Path(args.data_dir))[: args.limit]
        path = work / f"{task.name}.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        cfg = EvalConfig(tasks=[task.name], shots=0, limit=args.limit, data_dir=Path(args.data_dir), cache=Path("none"))
        t_ours, t_theirs = [], []
        lcfg = lmeval_task_config(tm, task, path)
        for _ in range(args.repeats):  # alternating, so a slow spell of the machine hits both sides
            t0 = time.perf_counter()
            ours = evaluate(ours_lm, cfg, progress=False).tasks[task.name]
            t_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = simple_evaluate(model=theirs_lm, tasks=[lcfg], num_fewshot=0, bootstrap_iters=0, task_manager=tm,
                                  log_samples=False, verbosity="ERROR")
            t_theirs.append(time.perf_counter() - t0)
        t_ours, t_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        theirs = res["results"][lcfg["task"]]
        entry = {"n": len(docs), "ours_items_per_s": len(docs) / t_ours, "theirs_items_per_s": len(docs) / t_theirs}
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in theirs and metric in ours.metrics:
                a, b = 100 * ours.metrics[metric], 100 * theirs[f"{metric},none"]
                entry[metric] = {"primer": round(a, 2), "lm_eval": round(b, 2), "diff": round(a - b, 2)}
                rows.append((task.name, metric, len(docs), a, b, a - b, t_theirs / t_ours))
        summary["tasks"][task.name] = entry
        print(f"{task.name}: done ({len(docs)} docs, ours {t_ours:.1f}s, lm-eval {t_theirs:.1f}s) {json.dumps(entry)}",
              file=sys.stderr, flush=True)
    w = max([len("task")] + [len(r[0]) for r in rows]) + 2
    print(f"{'task':<{w}}{'metric':<10}{'n':>6}{'primer':>9}{'lm-eval':>9}{'diff':>7}{'speed ours/theirs':>19}")
    for name, metric, n, a, b, d, speed in rows:
        print(f"{name:<{w}}{metric:<10}{n:>6}{a:>9.2f}{b:>9.2f}{d:>7.2f}{speed:>19.2f}")
    summary["max_abs_diff"] = max((abs(r[5]) for r in rows), default=None)
    summary["ours"] = {t: {m: e[m]["primer"] for m in ("acc", "acc_norm") if m in e} for t, e in summary["tasks"].items()}
    summary["ref"] = {t: {m: e[m]["lm_eval"] for m in ("acc", "acc_norm") if m in e} for t, e in summary["tasks"].items()}
    n_total = sum(e["n"] for e in summary["tasks"].values())
    t_ours = sum(e["n"] / e["ours_items_per_s"] for e in summary["tasks"].values())
    t_ref = sum(e["n"] / e["theirs_items_per_s"] for e in summary["tasks"].values())
    summary["ratio"] = round((n_total / t_ours) / (n_total / t_ref), 3) if n_total else None  # items/s ours / lm-eval
    summary["ratio_per_task"] = {t: round(e["ours_items_per_s"] / e["theirs_items_per_s"], 3) for t, e in summary["tasks"].items()}
    line = json.dumps(summary)
    if args.output:
        Path(args.output).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
