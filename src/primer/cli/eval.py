"""`primer eval`: benchmark a model (bundled SmolLM2, a .gguf, an HF dir, a primer checkpoint, or a served model)."""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.eval.served import SPEC_HELP
    from primer.teachers.http import HttpOptions

    p = sub.add_parser("eval", help="run benchmark tasks (lm-eval-compatible) on a model; table + results JSON")
    p.add_argument("model", help=SPEC_HELP)
    p.add_argument("--tasks", default="piqa", help="comma-separated tasks or groups ('list' to show them)")
    p.add_argument("--shots", type=int, default=None, help="few-shot examples (default: each task's lm-eval default)")
    p.add_argument("--limit", type=int, default=None, help="first N documents per task (per MMLU subject)")
    p.add_argument("--sample", type=int, default=None, help="a seeded random sample of N documents per task")
    p.add_argument("--index", default=None, help="search index (primer index build) for open-book tasks (*_openbook)")
    p.add_argument("--passages", type=int, default=3, help="retrieved chunks put into each open-book prompt (default: 3)")
    p.add_argument("--data-dir", default=None, help="folder laid out like shared/benchmarks (default: $PRIMER_DATA)")
    p.add_argument("--output", default=None, help="write results JSON here")
    p.add_argument("--log-samples", action="store_true", help="keep per-document records in the results JSON")
    p.add_argument("--samples", type=int, default=1, help="completions per code problem (pass@k for k <= samples)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--seed", type=int, default=1234, help="seed for few-shot draws and sampling")
    p.add_argument("--cache", default=None, help="sqlite answer cache (default ~/.cache/primer/eval-cache.sqlite; 'none' = off)")
    p.add_argument("--chat", action="store_true",
                   help="generative tasks: send each prompt as one user turn through the model's chat template")
    p.add_argument("--max-gen-tokens", type=int, default=None,
                   help="cap every generative task's token budget (shorter runs; changes scores, recorded in the JSON)")
    p.add_argument("--judge", default=None,
                   help="a teacher that also labels replies by the task's rubric (XSTest: the paper's three classes): "
                   "'bundled', a .gguf, a model dir or an OpenAI-compatible base URL (with --judge-model)")
    p.add_argument("--judge-model", default=None, help="the model name a served --judge is asked for")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--max-length", type=int, default=2048, help="context window used for scoring, in tokens")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--device", default=None, help="torch device (default: cpu, or cuda when available)")
    p.add_argument("--unsafe-code", action="store_true",
                   help="run code tasks' model-written code even where no sandbox isolation works (bubblewrap or "
                   "namespaces): resource limits only; the code can reach the network and your files")
    add_arguments(p.add_argument_group("served model (openai:BASE_URL/MODEL)"), HttpOptions, skip=("extra_body",))
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from primer.eval.tasks import list_tasks

    if args.tasks.strip() == "list":
        print("\n".join(list_tasks()))
        return 0
    from primer.eval.tasks import expand

    tasks = expand(args.tasks.split(","))  # unknown names fail here, before the model loads
    from primer.errors import PrimerError

    if args.passages < 0:
        raise PrimerError(f"--passages must be 0 or more, got {args.passages}")
    if any(t.query is not None for t in tasks):
        from primer.index.bm25 import index_meta

        if args.index is None:
            raise PrimerError("open-book tasks read passages from a search index: pass --index IDX "
                              "(build one with `primer index build DOCS --out IDX`)")
        index_meta(args.index)  # a wrong --index fails here, before the model loads
    import torch

    from primer.config import from_args
    from primer.eval.lm import load_lm
    from primer.eval.runner import EvalConfig, code_sandbox, run as run_eval, table
    from primer.teachers.http import HttpOptions

    import contextlib

    from primer.common.files import DirLock
    from primer.common.paths import benchmark_dir
    from primer.config import check_config

    data_dir = benchmark_dir(args.data_dir)
    cfg = check_config(EvalConfig(
        tasks=[t for t in args.tasks.split(",") if t.strip()], shots=args.shots, limit=args.limit, sample=args.sample,
        index=Path(args.index) if args.index else None, passages=args.passages,
        data_dir=Path(data_dir) if data_dir else None, samples=args.samples, temperature=args.temperature,
        seed=args.seed, log_samples=args.log_samples, cache=Path(args.cache) if args.cache else None,
        chat=args.chat, max_gen_tokens=args.max_gen_tokens, judge=args.judge, judge_model=args.judge_model,
        unsafe_code=args.unsafe_code,
    ))
    code_sandbox(tasks, cfg.unsafe_code)  # code tasks on a machine that cannot isolate them: before the model loads
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    output = Path(args.output) if args.output else None
    with DirLock.for_file(output, "primer eval") if output else contextlib.nullcontext():  # before the model loads
        lm = load_lm(args.model, http=from_args(HttpOptions, args), max_length=args.max_length,
                     batch_size=args.batch_size, device=device)
        res = run_eval(lm, cfg, output=output)
    print(table(res))
    if args.output:
        print(f"results written to {args.output}")
    return 0
