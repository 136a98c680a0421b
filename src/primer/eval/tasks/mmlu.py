"""MMLU (Hendrycks et al.), 57 subjects, in two prompt formats.

* `mmlu` - lm-eval's default: "{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:" scored over the
  letters " A".." D", after the subject line "The following are multiple choice questions (with
  answers) about {subject}.\\n\\n"; few-shot = first n of the dev split.
* `mmlu_cloze` - lm-eval's mmlu_continuation ("Question: {question}\\nAnswer:" scored over the
  answer texts), the cloze form small models are reported with (SmolLM2's "MMLU (cloze)").
Each subject is its own task (`mmlu_anatomy`, `mmlu_cloze_anatomy`); the group reports the
micro average (size-weighted, lm-eval's number) and the macro average (mean over subjects).
"""

from __future__ import annotations

import csv
from pathlib import Path

from primer.eval.tasks.core import Doc, Task, solved_parts

CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra",
        "anatomy",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    ),
    "humanities": (
        "formal_logic",
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "international_law",
        "jurisprudence",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "prehistory",
        "professional_law",
        "world_religions",
    ),
    "social_sciences": (
        "econometrics",
        "high_school_geography",
        "high_school_government_and_politics",
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "high_school_psychology",
        "human_sexuality",
        "professional_psychology",
        "public_relations",
        "security_studies",
        "sociology",
        "us_foreign_policy",
    ),
    "other": (
        "business_ethics",
        "clinical_knowledge",
        "college_medicine",
        "global_facts",
        "human_aging",
        "management",
        "marketing",
        "medical_genetics",
        "miscellaneous",
        "nutrition",
        "professional_accounting",
        "professional_medicine",
        "virology",
    ),
}
SUBJECTS = tuple(sorted(s for names in CATEGORIES.values() for s in names))
CATEGORY_OF = {s: c for c, names in CATEGORIES.items() for s in names}
SPLIT_DIRS = {"test": "test", "dev": "dev", "validation": "val"}


def _loader(subject: str):
    def load(data_dir: Path, split: str) -> list[Doc]:
        sub = SPLIT_DIRS.get(split)
        if sub is None:
            from primer.errors import PrimerError

            raise PrimerError(f"mmlu: unknown split '{split}'; available: {', '.join(SPLIT_DIRS)}")
        path = data_dir / "mmlu" / sub / f"{subject}_{sub}.csv"
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        return [{"question": r[0], "subject": subject, "choices": r[1:5], "answer": "ABCD".index(r[5].strip())}
                for r in rows]

    return load


def _subject_text(subject: str) -> str:
    return " ".join(subject.split("_"))


def _mmlu(subject: str) -> Task:
    desc = f"The following are multiple choice questions (with answers) about {_subject_text(subject)}.\n\n"
    return Task(
        name=f"mmlu_{subject}", version="1.0", kind="multiple_choice",
        files=(f"mmlu/test/{subject}_test.csv", f"mmlu/dev/{subject}_dev.csv"),
        layout="mmlu/{test,dev,val}/<subject>_{test,dev,val}.csv (CSV without header: question, A, B, C, D, answer letter)",
        loader=_loader(subject), split="test",
        doc_to_text=lambda d: (f"{d['question'].strip()}\nA. {d['choices'][0]}\nB. {d['choices'][1]}\n"
                               f"C. {d['choices'][2]}\nD. {d['choices'][3]}\nAnswer:"),
        doc_to_choice=lambda d: ["A", "B", "C", "D"],
        doc_to_target=lambda d: d["answer"],
        decontam=lambda d: solved_parts(d["question"], d["choices"], d["answer"]),
        description=lambda d, desc=desc: desc,
        metrics=("acc",),
        fewshot_split="dev", fewshot_sampler="first_n",
        group="mmlu",
        extra={"category": CATEGORY_OF[subject]},
    )


def _mmlu_cloze(subject: str) -> Task:
    desc = f"The following are questions (with answers) about {_subject_text(subject)}.\n\n"
    return Task(
        name=f"mmlu_cloze_{subject}", version="1.0", kind="multiple_choice",
        files=(f"mmlu/test/{subject}_test.csv", f"mmlu/dev/{subject}_dev.csv"),
        layout="mmlu/{test,dev,val}/<subject>_{test,dev,val}.csv (CSV without header: question, A, B, C, D, answer letter)",
        loader=_loader(subject), split="test",
        doc_to_text=lambda d: f"Question: {d['question'].strip()}\nAnswer:",
        doc_to_choice=lambda d: list(d["choices"]),
        doc_to_target=lambda d: d["answer"],
        decontam=lambda d: solved_parts(d["question"], d["choices"], d["answer"]),
        description=lambda d, desc=desc: desc,
        metrics=("acc", "acc_norm"),
        fewshot_split="dev", fewshot_sampler="first_n",
        group="mmlu_cloze",
        extra={"category": CATEGORY_OF[subject]},
        notes="lm-eval's mmlu_continuation prompt (cloze: the answer text is scored)",
    )


TASKS = [_mmlu(s) for s in SUBJECTS] + [_mmlu_cloze(s) for s in SUBJECTS]
GROUPS = {"mmlu": [f"mmlu_{s}" for s in SUBJECTS], "mmlu_cloze": [f"mmlu_cloze_{s}" for s in SUBJECTS]}
