"""Code generation: HumanEval and MBPP, scored by running the tests in the sandbox.

HumanEval is lm-eval's humaneval (prompt = signature + docstring, greedy, stop at a new top-level
statement, program = prompt + completion + test + check(entry_point)). MBPP is lm-eval's mbpp
(3-shot from the prompt split, task ids 2-4, "[BEGIN]"/"[DONE]" markers, program = completion +
the three asserts). With `--samples n` (and a temperature) every problem gets n completions and
the unbiased pass@k is reported for each k <= n in (1, 10, 100).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from primer.eval import metrics as M
from primer.common.jsonl import read_jsonl
from primer.eval.tasks.core import Doc, Task, need_split

KS = (1, 10, 100)


def score_programs(programs: list[str], timeout: float) -> dict[str, float]:
    from primer.sandbox import run_many  # noqa: PLC0415

    results = run_many(programs, timeout=timeout)
    n, c = len(results), sum(r.passed for r in results)
    out = {f"pass@{k}": M.pass_at_k(n, c, k) for k in KS if k <= n}
    out["_status"] = [r.status for r in results]  # type: ignore[assignment]
    return out


def tests_pass(program: Callable[[Doc, str], str], timeout: float = 10.0) -> Callable[[Doc, list[str]], dict[str, float]]:
    """A task's scorer: each completion made into a program with the task's tests (`program`), run in the sandbox."""

    def score(doc: Doc, responses: list[str]) -> dict[str, float]:
        return score_programs([program(doc, r) for r in responses], timeout=timeout)

    return score


# -- HumanEval ----------------------------------------------------------------------------------
HUMANEVAL_FILE = "humaneval/HumanEval.jsonl"


def load_humaneval(data_dir: Path, split: str) -> list[Doc]:
    need_split("humaneval", split, ("test",))
    return list(read_jsonl(data_dir / HUMANEVAL_FILE, strict=True))


def humaneval_program(doc: Doc, completion: str) -> str:
    return doc["prompt"] + completion + "\n" + doc["test"] + "\n" + f"check({doc['entry_point']})\n"


HUMANEVAL = Task(
    name="humaneval", version="1.0", kind="generate", files=(HUMANEVAL_FILE,),
    layout=f"{HUMANEVAL_FILE} (JSON lines with task_id, prompt, entry_point, canonical_solution, test)",
    loader=load_humaneval, split="test",
    doc_to_text=lambda d: d["prompt"],
    doc_to_target=lambda d: d["canonical_solution"],
    target_delimiter="",
    decontam=lambda d: (d["prompt"] + d["canonical_solution"], d["test"]),
    metrics=("pass@1",),
    until=("\nclass", "\ndef", "\n#", "\nif", "\nprint"), max_tokens=512, pass_at_k=True,
    score=tests_pass(humaneval_program), runs_code=True,
    notes="lm-eval's humaneval; max_tokens 512 (lm-eval: 1024); tests run in primer's sandbox",
)

# -- MBPP ---------------------------------------------------------------------------------------
MBPP_FILE = "mbpp/mbpp.jsonl"
MBPP_SPLITS = {"test": range(11, 511), "prompt": range(1, 11), "validation": range(511, 601), "train": range(601, 975)}


def load_mbpp(data_dir: Path, split: str) -> list[Doc]:
    need_split("mbpp", split, tuple(MBPP_SPLITS))
    ids = MBPP_SPLITS[split]
    return [d for d in read_jsonl(data_dir / MBPP_FILE, strict=True) if d["task_id"] in ids]


def _mbpp_text(d: Doc) -> str:
    t = d["test_list"]
    return (f"You are an expert Python programmer, and here is your task: {d['text']} "
            f"Your code should pass these tests:\n\n{t[0]}\n{t[1]}\n{t[2]}\n[BEGIN]\n")


# lm-eval's mbpp utils.list_fewshot_samples: tasks 2, 3, 4 of the prompt split, verbatim.
_MBPP_SHOTS = [
    {"task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"]},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n"
             "        if n % i == 0:\r\n            result = True\r\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"]},
    {"task_id": 4, "text": "Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
     "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",
     "test_list": ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"]},
]


def mbpp_program(doc: Doc, completion: str) -> str:
    return completion + "\n" + (doc.get("test_setup_code") or "") + "\n" + "\n".join(doc["test_list"]) + "\n"


MBPP = Task(
    name="mbpp", version="1.0", kind="generate", files=(MBPP_FILE,),
    layout=f"{MBPP_FILE} (JSON lines with text, code, task_id, test_setup_code, test_list)",
    loader=load_mbpp, split="test",
    doc_to_text=_mbpp_text,
    doc_to_target=lambda d: "\n".join(d["test_list"]),
    fewshot_target=lambda d: d["code"] + "\n[DONE]",
    fewshot_docs=lambda: [dict(d) for d in _MBPP_SHOTS],
    target_delimiter="",
    default_shots=3,
    decontam=lambda d: (d["text"] + "\n" + d["code"], "\n".join(d["test_list"])),
    metrics=("pass@1",),
    until=("[DONE]",), max_tokens=512, pass_at_k=True,
    score=tests_pass(mbpp_program), runs_code=True,
    notes="lm-eval's mbpp (3-shot, tasks 2-4); tests run in primer's sandbox",
)

TASKS = [HUMANEVAL, MBPP]
