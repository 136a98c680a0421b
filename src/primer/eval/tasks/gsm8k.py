"""GSM8K grade-school math, two ways.

* `gsm8k` - lm-eval's gsm8k: 5-shot "Question: ...\\nAnswer: <worked solution> #### <n>" from the
  train split, greedy until "Question:", scored by exact match after lm-eval's two answer filters
  (`strict-match`: the number after "####"; `flexible-extract`: the last number in the text).
* `gsm8k_code` - phi-1.5's way: the model writes a Python function `solution()` whose return value
  is the answer; the program runs in the sandbox and its printed result is compared numerically
  with the gold answer. Few-shot examples are three train problems solved in code (written for
  primer, not taken from elsewhere).
"""

from __future__ import annotations

import re
from pathlib import Path

from primer.eval import metrics as M
from primer.common.jsonl import read_jsonl
from primer.eval.tasks.core import Doc, Task, need_split

FILES = {"test": "gsm8k/test.jsonl", "train": "gsm8k/train.jsonl"}
LAYOUT = "gsm8k/test.jsonl and gsm8k/train.jsonl (JSON lines with question, answer ending in '#### <number>')"


def load_gsm8k(data_dir: Path, split: str) -> list[Doc]:
    need_split("gsm8k", split, tuple(FILES))
    return list(read_jsonl(data_dir / FILES[split], strict=True))


def gold_number(doc: Doc) -> str:
    return doc["answer"].split("####")[-1].strip().replace(",", "")


def score_gsm8k(doc: Doc, responses: list[str]) -> dict[str, float]:
    resp = responses[0]
    out = {}
    for name, pattern, group in (("strict-match", M.GSM8K_STRICT, 0), ("flexible-extract", M.GSM8K_FLEXIBLE, -1)):
        pred = M.regex_extract(resp, pattern, group_select=group)
        out[f"exact_match,{name}"] = M.exact_match(pred, doc["answer"], ignore_case=True, regexes_to_ignore=M.GSM8K_IGNORE)
    return out


GSM8K = Task(
    name="gsm8k", version="3.0", kind="generate", files=(FILES["test"], FILES["train"]), doc_schema="gsm8k",
    layout=LAYOUT, loader=load_gsm8k, split="test",
    doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
    doc_to_target=lambda d: d["answer"],
    decontam=lambda d: f"{d['question']} {d['answer']}",
    metrics=("exact_match,strict-match", "exact_match,flexible-extract"),
    fewshot_split="train", default_shots=5,
    until=("Question:", "</s>", "<|im_end|>"), max_tokens=256,
    score=score_gsm8k,
    notes="lm-eval's gsm8k; few-shot draws use primer's seeded sampler, so the 5 examples differ from lm-eval's",
)

# -- via code -----------------------------------------------------------------------------------
CODE_HEADER = "def solution():\n"


def _code_text(d: Doc) -> str:
    q = d["question"].replace('"""', "'''")
    return f'{CODE_HEADER}    """{q}"""\n'


_CODE_SHOTS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "#### 72",
     "code": "    april = 48\n    may = april / 2\n    result = april + may\n    return result\n"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "#### 10",
     "code": "    rate_per_minute = 12 / 60\n    minutes = 50\n    result = rate_per_minute * minutes\n    return result\n"},
    {"question": "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
                 "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
                 "How much more money does Betty need to buy the wallet?",
     "answer": "#### 5",
     "code": "    wallet = 100\n    has = wallet / 2\n    parents = 15\n    grandparents = 2 * parents\n"
             "    result = wallet - has - parents - grandparents\n    return result\n"},
]


def code_program(doc: Doc, completion: str) -> str:
    return _code_text(doc) + completion + "\n\nprint(solution())\n"


def _as_number(text: str) -> float | None:
    m = re.findall(r"-?\d[\d,]*\.?\d*(?:[eE]-?\d+)?", text.strip().splitlines()[-1] if text.strip() else "")
    if not m:
        return None
    try:
        return float(m[-1].replace(",", ""))
    except ValueError:
        return None


def score_gsm8k_code(doc: Doc, responses: list[str]) -> dict[str, float]:
    from primer.sandbox import run_python  # noqa: PLC0415

    res = run_python(code_program(doc, responses[0]), timeout=5.0)
    value = _as_number(res.stdout) if res.returncode == 0 else None
    gold = float(gold_number(doc))
    ok = value is not None and abs(value - gold) < 1e-4 * max(1.0, abs(gold))
    return {"exact_match": float(ok), "_status": [res.status]}  # type: ignore[dict-item]


GSM8K_CODE = Task(
    name="gsm8k_code", version="1.0", kind="generate", files=(FILES["test"],), doc_schema="gsm8k",
    layout=LAYOUT, loader=load_gsm8k, split="test",
    doc_to_text=_code_text,
    doc_to_target=lambda d: gold_number(d),
    fewshot_target=lambda d: d["code"],
    fewshot_docs=lambda: [dict(d) for d in _CODE_SHOTS],
    target_delimiter="",
    default_shots=3,
    decontam=lambda d: f"{d['question']} {d['answer']}",
    metrics=("exact_match",),
    until=("\ndef ", "\nclass ", "\nprint(", "\nif __name__", '\n"""', "\n#"), max_tokens=256,
    score=score_gsm8k_code, runs_code=True,
    notes="phi-1.5's code-based GSM8K: the generated solution() runs in the sandbox (5 s) and its printed "
          "value is compared with the gold number",
)

TASKS = [GSM8K, GSM8K_CODE]
