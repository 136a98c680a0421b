"""ARC-Easy and ARC-Challenge (AI2 Reasoning Challenge), lm-eval's arc_easy.yaml / arc_challenge.yaml.

The local copy is llm-foundry's: `query` = "Question: <question>" (no "Answer:"), 4 choices, 0-based
gold. We rebuild the HF schema (question, choices.text/label, answerKey) and apply lm-eval's prompt
"Question: {question}\\nAnswer:".
"""

from __future__ import annotations

from pathlib import Path

from primer.common.jsonl import read_jsonl
from primer.eval.tasks.core import Doc, Task, need_split, solved_parts, strip_prefix


def _loader(name: str, rel: str):
    def load(data_dir: Path, split: str) -> list[Doc]:
        need_split(name, split, ("test",))
        out = []
        for d in read_jsonl(data_dir / rel, strict=True):
            labels = list("ABCDE"[: len(d["choices"])])
            out.append({"question": strip_prefix(d["query"], "Question: "),
                        "choices": {"text": d["choices"], "label": labels}, "answerKey": labels[d["gold"]]})
        return out

    return load


def _arc(name: str, rel: str) -> Task:
    return Task(
        name=name, version="1.0", kind="multiple_choice", files=(rel,),
        layout=f"{rel} (JSON lines with query 'Question: ...', choices, gold)",
        loader=_loader(name, rel), split="test",
        doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
        doc_to_choice=lambda d: d["choices"]["text"],
        doc_to_target=lambda d: d["choices"]["label"].index(d["answerKey"]),
        decontam=lambda d: solved_parts(d["question"], d["choices"]["text"], d["choices"]["label"].index(d["answerKey"])),
        metrics=("acc_norm", "acc"),
        notes="few-shot from the test split itself (train is not in the local data)",
    )


TASKS = [
    _arc("arc_easy", "arc/arc_easy_test.jsonl"),
    _arc("arc_challenge", "arc/arc_challenge_test.jsonl"),
]
