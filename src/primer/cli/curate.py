"""`primer curate`: run the curation pipeline, annotate educational value with a teacher, train the scorer.

    primer curate run INPUT --out DIR [--benchmarks ../shared/benchmarks] [--scorer SCORER_DIR]
    primer curate annotate INPUT --out annotations.jsonl --n 500 [--teacher bundled|URL|FILE.gguf]
    primer curate train-scorer annotations.jsonl --out SCORER_DIR [--kinds embed,hash] [--threshold 3]
"""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.curate.pipeline import CurateConfig

    p = sub.add_parser("curate", help="filter, score, deduplicate and decontaminate a corpus",
                       description="Curation: heuristic filters, educational-value scoring (teacher-annotated "
                       "sample -> fast scorer), MinHash near-duplicate removal, n-gram decontamination.")
    verbs = p.add_subparsers(dest="curate_verb", required=True, metavar="SUBCOMMAND")

    r = verbs.add_parser("run", help="run (or resume) the pipeline over an input",
                         description="Filters, decontaminates, scores and deduplicates INPUT into OUT/data; "
                         "counts per step and reason go to OUT/stats.json. A killed run resumes per shard "
                         "when rerun with the same arguments. Flags override the [curate] section of --recipe.")
    r.add_argument("input_pos", nargs="?", metavar="INPUT", help="file, folder, or hf:NAME[:SPLIT]")
    r.add_argument("--recipe", default=None, help="recipe file whose [curate] section (or top level) gives the fields")
    add_arguments(r, CurateConfig, skip=("input",))
    r.set_defaults(func=run_pipeline)

    a = verbs.add_parser("annotate", help="teacher scores a sample for educational value (0-5, resumable)")
    a.add_argument("input", help="file, folder, or hf:NAME[:SPLIT]")
    a.add_argument("--out", required=True, help="annotations JSONL (appended; a rerun resumes)")
    a.add_argument("--n", type=int, default=200, help="documents to sample (default: 200)")
    a.add_argument("--teacher", default="bundled", help="'bundled', a .gguf file, or an OpenAI-compatible base URL")
    a.add_argument("--model", default=None, help="model name for an HTTP teacher")
    a.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    a.add_argument("--max-chars", type=int, default=2000, help="characters of each document shown (default: 2000)")
    a.add_argument("--max-tokens", type=int, default=160, help="tokens the teacher may write (default: 160)")
    a.add_argument("--text-key", default="text")
    a.add_argument("--id-key", default="id")
    a.set_defaults(func=run_annotate)

    t = verbs.add_parser("train-scorer", help="train fast educational-value scorers on the annotations",
                         description="Trains (a) all-MiniLM-L6-v2 embeddings + ridge and (b) hashed n-grams + "
                         "ridge on the teacher's scores; reports held-out F1 at the threshold, confusion "
                         "matrices and agreement with the teacher; saves both, marks the better one.")
    t.add_argument("annotations", help="JSONL written by `primer curate annotate`")
    t.add_argument("--out", required=True, help="scorer directory")
    t.add_argument("--kinds", default="embed,hash", help="scorers to train: embed, hash (default: both)")
    t.add_argument("--threshold", type=float, default=3.0, help="keep threshold on the 0-5 scale (default: 3)")
    t.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (default: 0.2)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--alpha", type=float, default=1.0, help="ridge regularization (default: 1.0)")
    t.set_defaults(func=run_train_scorer)


def run_pipeline(args) -> int:
    from primer.config import from_args, load_section
    from primer.curate.pipeline import CurateConfig, curate

    base = load_section(args.recipe, "curate", CurateConfig) if args.recipe else None
    cfg = from_args(CurateConfig, args, base)
    if args.input_pos:
        cfg.input = args.input_pos
    curate(cfg)
    return 0


def run_annotate(args) -> int:
    import json

    from primer.curate.edu import annotate

    r = annotate(args.input, args.out, n=args.n, teacher_spec=args.teacher, model=args.model, seed=args.seed,
                 max_chars=args.max_chars, max_tokens=args.max_tokens, text_key=args.text_key, id_key=args.id_key,
                 progress=True)
    print(json.dumps(r, indent=2))
    return 0


def run_train_scorer(args) -> int:
    import json

    from primer.curate.edu import format_scorer_report, train_scorer

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    r = train_scorer(args.annotations, args.out, kinds, threshold=args.threshold, test_fraction=args.test_fraction,
                     seed=args.seed, alpha=args.alpha)
    print(format_scorer_report(r))
    print(f"report: {args.out}/report.json")
    return 0 if json.dumps(r) else 1
