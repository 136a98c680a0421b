"""`primer topics`: list/export the shipped topic tree, or expand topics into more leaves with a teacher."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "topics",
        help="list or export the topic tree; --expand grows it with a teacher (near-duplicates merged)",
        description="Without --expand: print counts per subject (or --list every topic, or --export FILE "
        "as JSONL for `primer synth --topics`). With --expand OUT.jsonl: ask the teacher for subtopics of "
        "each seed topic and append the new, non-duplicate ones (resumable).",
    )
    p.add_argument("--seeds", metavar="FILE", help="seed topics (JSONL/YAML/text); default: the shipped tree")
    p.add_argument("--subjects", default="", help="only these subjects (comma-separated)")
    p.add_argument("--list", action="store_true", help="print every topic, one per line")
    p.add_argument("--export", metavar="FILE", help="write the topics as JSONL")
    p.add_argument("--expand", metavar="OUT", help="JSONL file to append expanded subtopics to (resumes)")
    p.add_argument("--per-topic", type=int, default=10, help="subtopics to ask for per seed topic (default 10)")
    p.add_argument("--limit", type=int, default=None, help="expand only the first N seed topics")
    p.add_argument("--teacher", default="bundled", help="'bundled', a .gguf file, or an OpenAI-compatible base URL")
    p.add_argument("--model", default=None, help="model name for an HTTP teacher")
    p.add_argument("--concurrency", type=int, default=8, help="HTTP requests in flight (default 8)")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens per teacher answer (default 200)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from primer.errors import PrimerError
    from primer.synth import topics as T

    topics = T.read_topics(args.seeds) if args.seeds else T.shipped()
    if args.subjects:
        want = {s.strip().lower() for s in args.subjects.split(",") if s.strip()}
        topics = [t for t in topics if t.subject.lower() in want]
        if not topics:
            raise PrimerError(f"no topics of subject(s) {sorted(want)}")
    if args.expand:
        from primer.common.files import DirLock
        from primer.teachers import HttpOptions, Sampling, load_teacher

        seeds = topics[: args.limit] if args.limit else topics
        sampling = Sampling(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
        with DirLock.for_file(args.expand, "primer topics --expand"):  # before the teacher loads
            teacher = load_teacher(args.teacher, args.model, options=HttpOptions(concurrency=args.concurrency))
            try:
                stats = T.expand(seeds, teacher, args.expand, per_topic=args.per_topic, sampling=sampling,
                                 progress=not args.no_progress)
            finally:
                teacher.close()
        total = len(T.read_topics(args.expand)) if Path(args.expand).stat().st_size else 0
        print(f"expanded {stats['parents'] - stats['parents_done_before']} seed topics "
              f"({stats['parents_done_before']} done before): {stats['new']} new subtopics, "
              f"{stats['duplicates']} near-duplicates merged; {total} topics in {args.expand}")
        return 0
    if args.export:
        with open(args.export, "w") as f:
            for t in topics:
                f.write(json.dumps({"topic": t.name, "subject": t.subject, "area": t.area}) + "\n")
        print(f"wrote {len(topics)} topics to {args.export}")
        return 0
    if args.list:
        for t in topics:
            print(f"{t.subject}\t{t.area}\t{t.name}")
        return 0
    for subject, n in T.iter_subjects(topics).items():
        print(f"{n:6d}  {subject}")
    print(f"{len(topics):6d}  topics in all")
    return 0
