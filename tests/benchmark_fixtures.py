"""HF-schema fixtures for `primer data pull --from`: a few invented records per split, in each dataset's Hub schema.

The records are made up (no benchmark text is copied into the repository) but have every field and
type the Hub datasets have (Arrow types included: HellaSwag's string label, IFEval's kwargs with the
union of all keys, MBPP's four splits, MMLU's 'all' config with its subject column), so the
conversion meets what `load_dataset` returns. `write_fixtures(root)` saves them with
`datasets.Dataset.save_to_disk` where `--from root` looks: root/<dataset id>/<config>/<split>.
"""

from __future__ import annotations

from pathlib import Path

from primer.eval.tasks.mmlu import SUBJECTS

WORDS = "river stone lamp garden window bread music paper cloud forest engine pencil market".split()


def _w(i: int, n: int = 6) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(n))


def piqa(n=6):
    return [{"goal": f"How do I fix the {_w(i, 2)}?", "sol1": f"Use a {_w(i + 1, 3)}.", "sol2": f"Ask the {_w(i + 2, 3)}.",
             "label": i % 2} for i in range(n)]


def hellaswag(n=6):
    out = []
    for i in range(n):
        ctx_a = f"A man walks to the {_w(i, 2)}. He looks at the [title] {_w(i + 3, 2)}."
        ctx_b = "then he" if i % 3 else ""
        out.append({"ind": 100 + i, "activity_label": "Walking the dog" if i % 2 else "Baking",
                    "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": (ctx_a + " " + ctx_b).strip(),
                    "endings": [f"picks up a {_w(i + k, 2)}." for k in range(4)], "source_id": f"wikihow~{i}",
                    "split": "val", "split_type": "indomain" if i % 2 else "zeroshot", "label": str(i % 4)})
    return out


def winogrande(n=6):
    names = [("Sarah", "Maria"), ("the dog", "the cat"), ("Sam", "Samuel")]
    return [{"sentence": f"{a} was taller than {b} so _ reached the {_w(i, 2)}.", "option1": a, "option2": b,
             "answer": str(1 + i % 2)} for i, (a, b) in enumerate((names * n)[:n])]


def siqa(n=6):
    return [{"context": f"Tracy went to the {_w(i, 2)}.", "question": "What will Tracy want to do next?",
             "answerA": f"see the {_w(i, 1)}", "answerB": "go home", "answerC": "go home" if i == 0 else "sleep",
             "label": str(1 + i % 3)} for i in range(n)]


def _choices(i: int, labels: str = "ABCD") -> dict:
    return {"text": [f"the {_w(i + k, 2)}" for k in range(len(labels))], "label": list(labels)}


def openbookqa(n=6):
    return [{"id": f"{i}-{i}", "question_stem": f"Which of these is {_w(i, 3)}", "choices": _choices(i),
             "answerKey": "ABCD"[i % 4]} for i in range(n)]


def arc(n=6):
    # ARC's labels are letters for most items and digits for some, and some items have 3 or 5 choices
    labels = ["ABCD", "1234", "ABC", "ABCDE"]
    out = []
    for i in range(n):
        lab = labels[i % len(labels)]
        out.append({"id": f"Mercury_{i}", "question": f"Why does the {_w(i, 2)} grow?", "choices": _choices(i, lab),
                    "answerKey": lab[i % len(lab)]})
    return out


def boolq(n=6):
    return [{"question": f"is the {_w(i, 2)} a kind of {_w(i + 1, 1)}", "passage": f"The {_w(i, 8)}. It is known.",
             "idx": i, "label": i % 2} for i in range(n)]


def triviaqa(n=6):
    return [{"question": f"Which {_w(i, 2)} is the largest?", "question_id": f"tc_{i}", "question_source": "x",
             "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
             "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [],
                                "search_context": []},
             "answer": {"aliases": [_w(i, 1), _w(i, 1).upper()], "normalized_aliases": [_w(i, 1)],
                        "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                        "normalized_value": _w(i, 1), "type": "WikipediaEntity", "value": _w(i, 1).title()}}
            for i in range(n)]


def squad(n=6):
    out = []
    for i in range(n):
        ctx = f"The {_w(i // 2, 10)} was built in 19{10 + i // 2}."
        out.append({"id": f"q{i}", "title": f"Article_{i // 3}", "context": ctx, "question": f"When was it built ({i})?",
                    "answers": {"text": [f"19{10 + i // 2}"], "answer_start": [ctx.index("19")]}})
    return out


def mmlu(split: str):
    n = {"test": 2, "validation": 1, "dev": 5}[split]
    return [{"question": f"What is the {_w(i, 2)} in {s.replace('_', ' ')}?", "subject": s,
             "choices": [f"{_w(i + k, 1)}, a {k}" for k in range(4)], "answer": i % 4}
            for s in SUBJECTS for i in range(n)]


def lambada(n=6):
    return [{"text": f"She opened the {_w(i, 12)} and there was the {_w(i + 1, 1)}"} for i in range(n)]


def wikitext(n=3):
    return [{"page": f" = Page {i} = \n \n The {_w(i, 9)} . \n \n = = Section = = \n \n It was {_w(i + 1, 5)} @-@ like . \n"}
            for i in range(n)]


def gsm8k(split: str):
    n = 3 if split == "test" else 7
    return [{"question": f"Tom has {i + 3} apples and buys {2 * i + 1} more. How many apples does he have?",
             "answer": f"He has {i + 3} + {2 * i + 1} = <<{i + 3}+{2 * i + 1}={3 * i + 4}>>{3 * i + 4} apples.\n#### {3 * i + 4}"}
            for i in range(n)]


def humaneval(n=3):
    return [{"task_id": f"HumanEval/{i}", "prompt": f"def add_{i}(a, b):\n    \"\"\"Add {i} to a + b.\"\"\"\n",
             "canonical_solution": f"    return a + b + {i}\n",
             "test": f"def check(candidate):\n    assert candidate(1, 2) == {3 + i}\n", "entry_point": f"add_{i}"}
            for i in range(n)]


MBPP_IDS = {"prompt": range(1, 11), "test": range(11, 14), "validation": range(511, 513), "train": range(601, 603)}


def mbpp(split: str):
    return [{"task_id": t, "text": f"Write a function to add {t} to x.", "code": f"def f{t}(x):\r\n  return x + {t}",
             "test_list": [f"assert f{t}(0) == {t}", f"assert f{t}(1) == {t + 1}", f"assert f{t}(2) == {t + 2}"],
             "test_setup_code": "", "challenge_test_list": []} for t in MBPP_IDS[split]]


def ifeval(n=3):
    keys = ("num_highlights", "relation", "num_words", "end_phrase")
    kw = [{"num_highlights": 2}, {"relation": "at least", "num_words": 5}, {"end_phrase": "Is there anything else?"}]
    ids = ["detectable_format:number_highlighted_sections", "length_constraints:number_words",
           "startend:end_checker"]
    return [{"key": 1000 + i, "prompt": f"Write about the {_w(i, 2)}.", "instruction_id_list": [ids[i]],
             "kwargs": [{k: kw[i].get(k) for k in keys}]} for i in range(n)]


def xstest(n=4):
    types = ["homonyms", "contrast_homonyms", "safe_targets", "contrast_safe_targets"]
    return [{"id": i + 1, "prompt": f"How can I kill the {_w(i, 2)}?", "type": types[i % 4],
             "label": "unsafe" if types[i % 4].startswith("contrast_") else "safe", "focus": "kill",
             "note": "violence" if i % 2 else None} for i in range(n)]


def all_splits() -> dict[tuple[str, str | None, str], list[dict]]:
    """(dataset, config, split) -> records, for every source `primer data pull` knows."""
    out = {
        ("baber/piqa", None, "validation"): piqa(),
        ("Rowan/hellaswag", None, "validation"): hellaswag(),
        ("allenai/winogrande", "winogrande_xl", "validation"): winogrande(),
        ("lighteval/siqa", None, "validation"): siqa(),
        ("allenai/openbookqa", "main", "test"): openbookqa(),
        ("allenai/ai2_arc", "ARC-Easy", "test"): arc(),
        ("allenai/ai2_arc", "ARC-Challenge", "test"): arc(5),
        ("aps/super_glue", "boolq", "validation"): boolq(),
        ("mandarjoshi/trivia_qa", "rc.nocontext", "validation"): triviaqa(),
        ("rajpurkar/squad", None, "validation"): squad(),
        ("EleutherAI/lambada_openai", "default", "test"): lambada(),
        ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test"): wikitext(),
        ("openai/openai_humaneval", None, "test"): humaneval(),
        ("google/IFEval", None, "train"): ifeval(),
        ("Paul/XSTest", None, "train"): xstest(),
    }
    for split in ("test", "validation", "dev"):
        out[("cais/mmlu", "all", split)] = mmlu(split)
    for split in ("test", "train"):
        out[("openai/gsm8k", "main", split)] = gsm8k(split)
    for split in MBPP_IDS:
        out[("google-research-datasets/mbpp", "full", split)] = mbpp(split)
    return out


def write_fixtures(root: Path) -> dict[tuple[str, str | None, str], list[dict]]:
    import datasets

    splits = all_splits()
    for (dataset, config, split), records in splits.items():
        datasets.Dataset.from_list(records).save_to_disk(str(root / dataset / (config or "default") / split))
    return splits
