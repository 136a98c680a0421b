"""`primer audit`: does the score survive new numbers and formats, and is the test set in the training data?"""

from __future__ import annotations


def register(sub) -> None:
    from primer.audit.run import AuditConfig
    from primer.config import add_arguments
    from primer.eval.served import SPEC_HELP
    from primer.teachers.http import HttpOptions

    p = sub.add_parser(
        "audit",
        help="perturbation robustness (new numbers, names, formats, option order) and contamination evidence "
        "(n-gram overlap with the corpus; without it Min-K%%++, loss, zlib, verbatim completion and the permutation "
        "test against controls, checked with a reference model); a verdict per signal",
    )
    p.add_argument("model", help=SPEC_HELP)
    add_arguments(p, AuditConfig)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument("--max-length", type=int, default=2048, help="context window used for scoring, in tokens")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="torch device (default: cpu, or cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_arguments(p.add_argument_group("served model (openai:BASE_URL/MODEL)"), HttpOptions, skip=("extra_body",))
    p.set_defaults(func=run)


def run(args) -> int:
    import contextlib

    from primer.audit.report import table
    from primer.audit.run import AuditConfig, audit, check_config
    from primer.common.files import DirLock
    from primer.config import from_args
    from primer.eval.runner import code_sandbox
    from primer.eval.tasks import get_task

    cfg = from_args(AuditConfig, args)
    code_sandbox([get_task(cfg.task)], cfg.unsafe_code)  # an unknown task, or unisolated code, fails before loading
    check_config(cfg)
    import torch

    from primer.eval.lm import load_lm
    from primer.teachers.http import HttpOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with DirLock(cfg.out, "primer audit") if cfg.out else contextlib.nullcontext():  # claimed before the model loads
        lm = load_lm(args.model, http=from_args(HttpOptions, args), max_length=args.max_length,
                     batch_size=args.batch_size, device=device)
        res = audit(lm, cfg, progress=not args.quiet)
    print(table(res))
    if res.files:
        print("written: " + ", ".join(res.files.values()))
    return 0
