"""Whole-item decontamination, measured: one item of each multiple-choice/QA task pasted (question + correct
answer) into 12 clean documents each must be dropped (>= 95% per task), and clean documents must not be
(<= 0.5% of 3,316 C4 pages and TinyStories stories). The pastes are written here from the raw fields, not
from the tasks' own decontamination text, so a task that forgets its answer or choices fails.

Each task's item is its shortest one that the index can check (question + answer of at least 8 words):
the hardest case, where the whole solved item is one gram. The paste is plain (question, then answer);
labels between them ("Answer:") break a whole-item gram, so a labelled copy of an item shorter than n words
is not found (longer items still are, by their n-grams). Needs ../shared/benchmarks.
"""

from __future__ import annotations

import random

from primer.curate.decontam import NgramIndex, normalize
from primer.curate.document import read_documents
from primer.eval.tasks import GROUPS, get_task


def _paste(task: str, d: dict) -> str:
    """The item as a page copying it would: question (with its passage or context) and the correct answer."""
    if task == "piqa":
        return f"{d['goal']} {[d['sol1'], d['sol2']][d['label']]}"
    if task in ("arc_easy", "arc_challenge"):
        return f"{d['question']}\n{d['choices']['text'][d['choices']['label'].index(d['answerKey'])]}"
    if task == "openbookqa":
        return f"{d['question_stem']} {d['choices']['text'][d['choices']['label'].index(d['answerKey'])]}"
    if task == "hellaswag":
        return f"{d['ctx_a']} {d['ctx_b']} {d['endings'][int(d['label'])]}"
    if task == "winogrande":
        return d["sentence"].replace("_", d["option" + d["answer"]])
    if task == "siqa":
        return f"{d['context']} {d['question']} {d['answer' + 'ABC'[int(d['label']) - 1]]}"
    if task == "boolq":
        return f"{d['passage']}\n{d['question']}? {['no', 'yes'][d['label']]}."
    if task.startswith("mmlu_"):
        return f"{d['question']}\n{d['choices'][d['answer']]}"
    if task == "triviaqa":
        return f"{d['question']} {d['answer']['value']}"
    if task == "squad":
        return f"{d['context']}\n{d['question']} {d['answers']['text'][0]}"
    if task == "gsm8k":
        return f"{d['question']}\n{d['answer']}"
    raise AssertionError(task)


TASKS = ["piqa", "arc_easy", "arc_challenge", "openbookqa", "hellaswag", "winogrande", "siqa", "boolq", "mmlu",
         "triviaqa", "squad", "gsm8k"]
DOCS_PER_ITEM = 12


def _shortest_checked(data_dir, bench: str, min_words: int) -> tuple[str, str, str]:
    """(task, item id, paste) of the benchmark's shortest item with >= min_words words of question + answer."""
    best = None
    for name in GROUPS.get(bench, [bench]):
        for i, d in enumerate(get_task(name).docs(data_dir)):
            text = _paste(name, d)
            words = len(normalize(text).split())
            if words >= min_words and (best is None or words < best[0]):
                best = (words, name, str(i), text)
    return best[1:]


def test_whole_item_decontamination_recall_and_clean_drop_rate(data_dir):
    idx = NgramIndex.from_benchmarks(data_dir)
    print("\n" + idx.describe(max_names=3))
    clean = [d.text for d in read_documents(data_dir / "c4_sample")]
    clean += [s.strip() for s in (data_dir / "tinystories" / "TinyStories-train_prefix.txt").read_text(
        encoding="utf-8").split("<|endoftext|>") if s.strip()]
    assert len(clean) >= 3000  # enough to measure 0.5% (15 documents)
    dropped_clean = [i for i, t in enumerate(clean) if idx.contaminated(t)]

    rng = random.Random(17)
    hosts = rng.sample(range(len(clean)), DOCS_PER_ITEM * len(TASKS))
    rows, failures = [], []
    for k, bench in enumerate(TASKS):
        task, item_id, paste = _shortest_checked(data_dir, bench, idx.min_words)
        caught = 0
        for host in hosts[k * DOCS_PER_ITEM : (k + 1) * DOCS_PER_ITEM]:
            words = clean[host].split(" ")
            at = rng.randrange(len(words) + 1)  # anywhere: start, middle or end of the page
            doc = " ".join(words[:at] + [paste] + words[at:])
            names = {m.name for m in idx.contaminated(doc)}
            caught += f"{task}/{item_id}" in names
        rows.append((bench, idx.task_n[task], f"{task}/{item_id}", len(normalize(paste).split()), caught))
        if caught < 0.95 * DOCS_PER_ITEM:
            failures.append(bench)
    print(f"{'task':<14} {'n':>3}  {'item':<28} {'words':>5}  dropped")
    for bench, n, item, words, caught in rows:
        print(f"{bench:<14} {n:>3}  {item:<28} {words:>5}  {caught}/{DOCS_PER_ITEM}")
    print(f"clean documents dropped: {len(dropped_clean)}/{len(clean)} = {len(dropped_clean) / len(clean):.3%}")
    assert not failures, rows
    assert len(dropped_clean) <= 0.005 * len(clean), [clean[i][:200] for i in dropped_clean]
    assert {r[0] for r in rows} >= {"piqa", "boolq", "triviaqa", "mmlu"}
