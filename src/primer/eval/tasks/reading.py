"""Reading comprehension and question answering, closed-book and open-book: BoolQ, TriviaQA, SQuAD v1.1.

BoolQ is multiple choice ("no"/"yes") with lm-eval's super_glue/boolq prompt. TriviaQA is
lm-eval's triviaqa task (greedy answer up to a newline, period or comma; exact match against the
aliases ignoring case and punctuation). SQuAD v1.1 uses lm-eval's squadv2 prompt (Title /
Background / Question / Answer) with the official v1.1 EM/F1.

The same questions under three conditions (phi-3's answer to a small model's weak memory):
  * `squad`: the gold paragraph is given (the oracle; lm-eval's prompt);
  * `squad_closedbook`, `triviaqa`: the question alone;
  * `squad_openbook`, `triviaqa_openbook`: the top --passages chunks of a BM25 --index precede the
    closed-book prompt (`primer.index.prompt.with_passages`); the model has to retrieve the paragraph.
    Open-book tasks also score retrieval: `recall@k` = the gold paragraph is among the top k chunks
    (SQuAD), `answer_recall@k` = an answer alias occurs in one of them (TriviaQA, DPR's measure,
    for any corpus the user indexes).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from primer.eval import metrics as M
from primer.common.jsonl import read_jsonl
from primer.eval.tasks.core import Doc, Task, need_split, strip_prefix
from primer.index.prompt import with_passages

RECALL_KS = (1, 5, 20)


def open_book(task: Task, *, name: str, query: Callable[[Doc], str], hit: Callable[[Doc, str], bool],
              recall: str) -> Task:
    """The open-book twin of a closed-book generative task: passages before its prompt, recall@k scored."""
    closed_prompt, closed_score = task.doc_to_text, task.score

    def score(doc: Doc, responses: list[str]) -> dict[str, float]:
        found = [hit(doc, h["text"]) for h in doc.get("retrieved") or []]
        return {**closed_score(doc, responses),  # type: ignore[misc]
                **{f"{recall}@{k}": float(any(found[:k])) for k in RECALL_KS}}

    return dataclasses.replace(
        task, name=name, query=query, score=score,
        doc_to_text=lambda d: with_passages(closed_prompt(d), d.get("passages") or []),
        metrics=task.metrics + tuple(f"{recall}@{k}" for k in RECALL_KS),
        notes=f"open-book {task.name}: the top --passages chunks of --index precede the prompt",
    )


# -- BoolQ --------------------------------------------------------------------------------------
BOOLQ_FILE = "boolq/boolq_dev.jsonl"


def load_boolq(data_dir: Path, split: str) -> list[Doc]:
    """llm-foundry's query is "Passage: {passage}\\nQuestion: {question}?"; split it back."""
    need_split("boolq", split, ("validation",))
    out = []
    for d in read_jsonl(data_dir / BOOLQ_FILE, strict=True):
        q = strip_prefix(d["query"], "Passage: ")
        cut = q.rfind("\nQuestion: ")
        passage, question = (q[:cut], q[cut + len("\nQuestion: "):]) if cut >= 0 else (q, "")
        out.append({"passage": passage, "question": question.removesuffix("?"), "label": int(d["gold"])})
    return out


BOOLQ = Task(
    name="boolq", version="2.0", kind="multiple_choice", files=(BOOLQ_FILE,),
    layout=f"{BOOLQ_FILE} (JSON lines with query 'Passage: ...\\nQuestion: ...?', choices [no, yes], gold)",
    loader=load_boolq, split="validation",
    doc_to_text=lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:",
    doc_to_choice=lambda d: ["no", "yes"],
    doc_to_target=lambda d: d["label"],
    # the passage with its question and answer, and the question and answer alone (found without the passage)
    decontam=lambda d: tuple(f"{c}{d['question']}? {['no', 'yes'][d['label']]}" for c in (d["passage"] + " ", "")),
    metrics=("acc",),
)

# -- TriviaQA -----------------------------------------------------------------------------------
TRIVIAQA_FILE = "triviaqa/triviaqa_sm_sub.jsonl"


def load_triviaqa(data_dir: Path, split: str) -> list[Doc]:
    need_split("triviaqa", split, ("validation",))
    out = []
    for i, d in enumerate(read_jsonl(data_dir / TRIVIAQA_FILE, strict=True)):
        q = strip_prefix(d["context"], "Question: ").removesuffix("\nAnswer:")
        out.append({"question_id": str(i), "question": q, "answer": {"value": d["answer"], "aliases": d["aliases"]}})
    return out


def score_triviaqa(doc: Doc, responses: list[str]) -> dict[str, float]:
    pred = responses[0].strip()  # lm-eval's remove_whitespace + take_first filters
    return {"exact_match": M.exact_match(pred, doc["answer"]["aliases"], ignore_case=True, ignore_punctuation=True)}


TRIVIAQA = Task(
    name="triviaqa", version="3.0", kind="generate", files=(TRIVIAQA_FILE,),
    layout=f"{TRIVIAQA_FILE} (JSON lines with context 'Question: ...\\nAnswer:', answer, aliases)",
    loader=load_triviaqa, split="validation",
    # lm-eval appends "?" although TriviaQA questions already end in one; kept for agreement.
    doc_to_text=lambda d: f"Question: {d['question']}?\nAnswer:",
    doc_to_target=lambda d: d["answer"]["aliases"],
    fewshot_target=lambda d: d["answer"]["value"],
    decontam=lambda d: (f"{d['question']} {d['answer']['value']}",),
    metrics=("exact_match",),
    until=("\n", ".", ","), max_tokens=32,
    score=score_triviaqa,
    notes="llm-foundry's 3,000-question subsample; few-shot from the same file",
)

# -- SQuAD v1.1 ---------------------------------------------------------------------------------
SQUAD_FILE = "squad/dev-v1.1.json"


def load_squad(data_dir: Path, split: str) -> list[Doc]:
    need_split("squad", split, ("validation",))
    data = json.loads((data_dir / SQUAD_FILE).read_text(encoding="utf-8"))
    out = []
    for art in data["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                out.append({"id": qa["id"], "title": art["title"], "context": para["context"], "question": qa["question"],
                            "answers": {"text": [a["text"] for a in qa["answers"]],
                                        "answer_start": [a["answer_start"] for a in qa["answers"]]}})
    return out


def score_squad(doc: Doc, responses: list[str]) -> dict[str, float]:
    pred, truths = responses[0].strip(), doc["answers"]["text"]
    return {"exact_match": M.squad_em(pred, truths), "f1": M.squad_f1(pred, truths)}


SQUAD = Task(
    name="squad", version="1.0", kind="generate", files=(SQUAD_FILE,),
    layout=f"{SQUAD_FILE} (official SQuAD v1.1 JSON: data[].title, paragraphs[].context, qas[].question/answers)",
    loader=load_squad, split="validation",
    doc_to_text=lambda d: f"Title: {d['title']}\n\nBackground: {d['context']}\n\nQuestion: {d['question']}\n\nAnswer:",
    doc_to_target=lambda d: d["answers"]["text"],
    decontam=lambda d: tuple(f"{c}{d['question']} {d['answers']['text'][0]}" for c in (d["context"] + " ", "")),
    metrics=("f1", "exact_match"),
    until=("\n",), max_tokens=32,
    score=score_squad,
    notes="lm-eval's squadv2 prompt; metric is the official SQuAD v1.1 EM/F1 (max over gold answers)",
)

SQUAD_CLOSEDBOOK = dataclasses.replace(
    SQUAD, name="squad_closedbook", doc_to_text=lambda d: f"Question: {d['question']}\n\nAnswer:",
    notes="closed-book SQuAD v1.1: the question alone (squad's prompt without Title and Background)",
)

SQUAD_OPENBOOK = open_book(SQUAD_CLOSEDBOOK, name="squad_openbook", query=lambda d: d["question"],
                           hit=lambda d, text: M.passage_hit(text, d["context"]), recall="recall")

TRIVIAQA_OPENBOOK = open_book(TRIVIAQA, name="triviaqa_openbook", query=lambda d: d["question"],
                              hit=lambda d, text: M.answer_hit(text, d["answer"]["aliases"]), recall="answer_recall")

TASKS = [BOOLQ, TRIVIAQA, TRIVIAQA_OPENBOOK, SQUAD, SQUAD_CLOSEDBOOK, SQUAD_OPENBOOK]
