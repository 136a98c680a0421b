"""Commonsense multiple choice: PIQA, HellaSwag, WinoGrande, Social IQa, OpenBookQA.

Prompts are lm-eval's (piqa.yaml, hellaswag.yaml + utils.py, winogrande/default.yaml +
preprocess_winogrande.py, siqa.yaml, openbookqa.yaml). Loaders rebuild the HF schema from the
formats in shared/benchmarks; where the local copy lost information the note says what was done.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from primer.common.jsonl import read_jsonl
from primer.eval.tasks.core import Doc, Task, need_split, solved_parts

# -- PIQA ---------------------------------------------------------------------------------------
PIQA_FILES = ("piqa/valid.jsonl", "piqa/valid-labels.txt")


def load_piqa(data_dir: Path, split: str) -> list[Doc]:
    need_split("piqa", split, ("validation",))
    labels = (data_dir / PIQA_FILES[1]).read_text().split()
    docs = list(read_jsonl(data_dir / PIQA_FILES[0], strict=True))
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(y)} for d, y in zip(docs, labels)]


PIQA = Task(
    name="piqa", version="1.0", kind="multiple_choice", files=PIQA_FILES,
    layout="piqa/valid.jsonl (JSON lines with goal, sol1, sol2) and piqa/valid-labels.txt (one 0/1 label a line)",
    loader=load_piqa, split="validation",
    doc_to_text=lambda d: f"Question: {d['goal']}\nAnswer:",
    doc_to_choice=lambda d: [d["sol1"], d["sol2"]],
    doc_to_target=lambda d: d["label"],
    decontam=lambda d: solved_parts(d["goal"], [d["sol1"], d["sol2"]], d["label"]),
    metrics=("acc", "acc_norm"),
    notes="few-shot examples come from the validation split itself (the train split is not in the local data)",
)

# -- HellaSwag ----------------------------------------------------------------------------------
HELLASWAG_FILE = "hellaswag/hellaswag_val.jsonl"


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag utils.preprocess (WikiHow bracket artefacts, double spaces)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _restore_ctx_b_capital(ctx: str) -> str:
    """The local file keeps `ctx` = ctx_a + " " + ctx_b with ctx_b lower-case; lm-eval capitalises
    ctx_b. ctx_b is the fragment after the last sentence end, so we capitalise that fragment's
    first letter (Python's str.capitalize, as lm-eval) when it starts lower-case."""
    i = ctx.rfind(". ")
    if i < 0:
        return ctx
    tail = ctx[i + 2:]
    if tail[:1].islower():
        return ctx[: i + 2] + tail.capitalize()
    return ctx


def load_hellaswag(data_dir: Path, split: str) -> list[Doc]:
    need_split("hellaswag", split, ("validation",))
    out = []
    for d in read_jsonl(data_dir / HELLASWAG_FILE, strict=True):
        if "ctx_a" in d:  # a `primer data pull` copy keeps the HF fields
            ctx_a, ctx_b = d["ctx_a"], d["ctx_b"]
        else:  # ctx_b left empty: lm-eval's ctx_a + " " + ctx_b.capitalize() then strips the space.
            ctx_a, ctx_b = _restore_ctx_b_capital(d["ctx"]), ""
        out.append({"ind": d["idx"], "activity_label": d["activity_label"], "ctx_a": ctx_a, "ctx_b": ctx_b,
                    "endings": d["endings"], "label": str(d["label"])})
    return out


def _hs_query(d: Doc) -> str:
    ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
    return hellaswag_preprocess(d["activity_label"] + ": " + ctx)


HELLASWAG = Task(
    name="hellaswag", version="1.0", kind="multiple_choice", files=(HELLASWAG_FILE,),
    layout="hellaswag/hellaswag_val.jsonl (JSON lines with idx, activity_label, ctx, label, endings)",
    loader=load_hellaswag, split="validation",
    doc_to_text=_hs_query,
    doc_to_choice=lambda d: [hellaswag_preprocess(e) for e in d["endings"]],
    doc_to_target=lambda d: int(d["label"]),
    decontam=lambda d: solved_parts(d["ctx_a"] + " " + d["ctx_b"], d["endings"], int(d["label"])),
    metrics=("acc_norm", "acc"),
    notes="local file is a text export: ctx_b's capital letter is restored heuristically; few-shot from validation",
)

# -- WinoGrande (partial evaluation: two contexts, one continuation) ----------------------------
WINOGRANDE_FILE = "winogrande/winogrande_dev.jsonl"


def load_winogrande(data_dir: Path, split: str) -> list[Doc]:
    """Rebuild sentence/option1/option2/answer from llm-foundry's context_options: the options are
    what follows the two contexts' common prefix, so sentence[:idx] + option == each context."""
    need_split("winogrande", split, ("validation",))
    out = []
    for d in read_jsonl(data_dir / WINOGRANDE_FILE, strict=True):
        if "sentence" in d:  # a `primer data pull` copy keeps the HF fields
            out.append({k: d[k] for k in ("sentence", "option1", "option2", "answer")})
            continue
        c1, c2 = d["context_options"]
        prefix = os.path.commonprefix([c1, c2])
        prefix = prefix[: prefix.rfind(" ") + 1]  # back off to a word start: "Sa|rah" -> "|Sarah"
        out.append({
            "sentence": prefix + "_ " + d["continuation"],
            "option1": c1[len(prefix):], "option2": c2[len(prefix):],
            "answer": str(d["gold"] + 1),
        })
    return out


def _wg_target(d: Doc) -> str:
    idx = d["sentence"].index("_") + 1
    return d["sentence"][idx:].strip()


def _wg_choices(d: Doc) -> list[str]:
    idx = d["sentence"].index("_")
    return [d["sentence"][:idx] + opt for opt in (d["option1"], d["option2"])]


WINOGRANDE = Task(
    name="winogrande", version="1.0", kind="multiple_choice", files=(WINOGRANDE_FILE,),
    layout="winogrande/winogrande_dev.jsonl (JSON lines with context_options [2], continuation, gold)",
    loader=load_winogrande, split="validation",
    doc_to_text=lambda d: {"1": 0, "2": 1}[d["answer"]],
    doc_to_choice=_wg_choices,
    doc_to_target=_wg_target,
    multiple_input=True,
    decontam=lambda d: tuple(_wg_choices(d)[i] + " " + _wg_target(d) for i in ({"1": (0, 1), "2": (1, 0)}[d["answer"]])),
    metrics=("acc",),
    notes="partial evaluation as lm-eval: score the shared continuation after each filled-in context",
)

# -- Social IQa ---------------------------------------------------------------------------------
SIQA_FILE = "siqa/siqa_dev.jsonl"


def load_siqa(data_dir: Path, split: str) -> list[Doc]:
    need_split("siqa", split, ("validation",))
    out = []
    for d in read_jsonl(data_dir / SIQA_FILE, strict=True):
        a, b, c = d["options"]
        # a `primer data pull` copy keeps HF's label (two options can share a text)
        label = d.get("label") or str(d["options"].index(d["answer"]) + 1)
        out.append({"context": d["context"], "question": d["question"], "answerA": a, "answerB": b, "answerC": c,
                    "label": label})
    return out


SIQA = Task(
    name="siqa", version="0.0", kind="multiple_choice", files=(SIQA_FILE,),
    layout="siqa/siqa_dev.jsonl (JSON lines with context, question, options [3], answer)",
    loader=load_siqa, split="validation",
    doc_to_text=lambda d: f"Q: {d['context']} {d['question']}\nA:",
    doc_to_choice=lambda d: [d["answerA"], d["answerB"], d["answerC"]],
    doc_to_target=lambda d: int(d["label"]) - 1,
    decontam=lambda d: solved_parts(f"{d['context']} {d['question']}", [d["answerA"], d["answerB"], d["answerC"]],
                                    int(d["label"]) - 1),
    metrics=("acc",),
    notes="lm-eval's social_iqa prompt",
)

# -- OpenBookQA ---------------------------------------------------------------------------------
OBQA_FILE = "openbookqa/openbookqa_test.jsonl"


def load_obqa(data_dir: Path, split: str) -> list[Doc]:
    need_split("openbookqa", split, ("test",))
    return [{"question_stem": d["query"], "choices": {"text": d["choices"], "label": list("ABCD"[: len(d["choices"])])},
             "answerKey": "ABCD"[d["gold"]]} for d in read_jsonl(data_dir / OBQA_FILE, strict=True)]


OPENBOOKQA = Task(
    name="openbookqa", version="1.0", kind="multiple_choice", files=(OBQA_FILE,),
    layout="openbookqa/openbookqa_test.jsonl (JSON lines with query, choices [4], gold)",
    loader=load_obqa, split="test",
    doc_to_text=lambda d: d["question_stem"],
    doc_to_choice=lambda d: d["choices"]["text"],
    doc_to_target=lambda d: d["choices"]["label"].index(d["answerKey"].lstrip()),
    decontam=lambda d: solved_parts(d["question_stem"], d["choices"]["text"],
                                    d["choices"]["label"].index(d["answerKey"].lstrip())),
    metrics=("acc_norm", "acc"),
    notes="few-shot from the test split itself (train is not in the local data)",
)

TASKS = [PIQA, HELLASWAG, WINOGRANDE, SIQA, OPENBOOKQA]
