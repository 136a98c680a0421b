"""`primer index build DOCS... --out IDX` and `primer index search IDX "query" -k 5`: BM25 retrieval."""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.index.bm25 import IndexConfig

    p = sub.add_parser("index", help="build a BM25 search index over documents, or search one",
                       description="Retrieval for facts: index documents (JSONL, SQuAD-format JSON, .txt/.md files "
                       "or folders of them) in paragraph chunks, then search them; `primer chat --index` and "
                       "`primer eval --index` put the top passages into the prompt.")
    verbs = p.add_subparsers(dest="index_verb", required=True, metavar="ACTION")
    b = verbs.add_parser("build", help="read, chunk and index documents into a directory")
    b.add_argument("inputs", nargs="+", metavar="DOCS", help=".jsonl[.gz], SQuAD .json, .txt, .md files or folders")
    b.add_argument("-o", "--out", required=True, help="index directory to write (replaced if it is an index)")
    add_arguments(b, IndexConfig)
    b.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    b.set_defaults(func=run_build)
    s = verbs.add_parser("search", help="print the top chunks for a query")
    s.add_argument("index", help="an index directory written by `primer index build`")
    s.add_argument("query", help="the search text")
    s.add_argument("-k", type=int, default=5, help="how many chunks to show (default: 5)")
    s.add_argument("--json", action="store_true", help="one JSON object per hit instead of text")
    s.set_defaults(func=run_search)


def run_build(args) -> int:
    import json

    from primer.config import from_args
    from primer.index.bm25 import IndexConfig, build_index

    r = build_index(args.inputs, args.out, from_args(IndexConfig, args), progress=args.progress)
    if r.bad_input.count:
        print(f"primer index: {r.bad_input.describe('unusable record')}")
    print(json.dumps({"out": args.out, "documents": r.documents, "chunks": r.chunks, "vocabulary": r.vocabulary,
                      "files": r.files, "bad_input": r.bad_input.count, "seconds": r.seconds}, indent=2))
    return 0


def run_search(args) -> int:
    import json
    import textwrap

    from primer.index.bm25 import Index

    hits = Index.load(args.index).search(args.query, k=args.k)
    if not hits:
        print("no chunk shares a word with the query")
    for h in hits:
        if args.json:
            print(json.dumps(h.to_dict(), ensure_ascii=False))
        else:
            print(f"{h.cite()}  score {h.score:.2f}")
            print(textwrap.indent(textwrap.shorten(h.text, 400, placeholder=" ..."), "    "))
    return 0
