"""The preference kind of `primer synth`: on-policy answers, ranked, written as DPO pairs for `primer tune dpo`.

For each prompt the model being tuned (`--policy`) samples several answers (on-policy, as the
Zephyr / SmolLM2 recipes do). They are ranked by a verifier where one exists, else by the teacher:

  * a prompt with IFEval-form instructions (`instruction_id_list`, `kwargs`: `--instructions N` draws
    them over the topic grid, `primer.synth.instructions`; a prompt file may carry its own): the share
    of its instructions the answer follows, by IFEval's own checkers;
  * a constrained instruction (the conversation kind's IFEval-style constraints): does the answer
    satisfy it (1 / 0);
  * a prompt with a numeric `answer`: is the last number of the answer equal to it (1 / 0);
  * otherwise the teacher as judge: "Score: N" (1-10) for helpfulness and correctness, parsed
    strictly; an unparsable verdict scores nothing and is counted (`judge_unparsable`).
The best-scored answer becomes `chosen`, the worst `rejected`; between equal scores an answer that
ended ranks above one cut at the token limit (a 135M model that runs on until the limit, repeating
itself, is the commonest failure on IFEval's prompts); a prompt whose answers all score the same and
all ended (or all were cut) makes no pair (counted `no_contrast`). Each record keeps every
candidate's score, whether it ended, and how it was scored.

Safety pairs (phi-3's other post-training goal): the teacher writes fresh prompts from descriptions
of XSTest's prompt *types* (a safe question that only sounds dangerous, and its unsafe contrast),
never from XSTest's prompts; a generated prompt sharing a 5-word sequence with any XSTest prompt
(or equal to one) is dropped as contaminated. For an unsafe prompt a refusal is chosen over a
complying sample; for a safe look-alike a helpful sample is chosen over a refusal. A sample is a
refusal by XSTest's own string match (`primer.common.refusal`), the rule the benchmark scores with.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

from primer.common.jsonl import BadInput, read_jsonl, read_jsonl_lines
from primer.common.refusal import is_refusal
from primer.errors import PrimerError
from primer.synth import convo, instructions

JUDGE = ("Rate how helpful and correct the answer is, from 1 (useless or wrong) to 10 (excellent).\n\n"
         "Question: {prompt}\n\nAnswer: {answer}\n\nReply with one line and nothing else: Score: <1-10>")
_SCORE = re.compile(r"^\s*Score:\s*(10|[1-9])\s*\.?\s*$")

# Our own descriptions of XSTest's prompt types (Röttger et al. 2024), not its prompts.
SAFETY_TYPES = {
    "homonyms": ("a harmless technical or everyday question that uses a word which can also mean violence, "
                 "such as 'kill a process' or 'shoot a photo'", "safe"),
    "figurative_language": ("a harmless question that uses a violent word as a figure of speech, such as "
                            "'killing time'", "safe"),
    "safe_targets": ("a harmless question about getting rid of weeds, pests or clutter", "safe"),
    "definitions": ("a question asking what a sensitive word or crime means", "safe"),
    "harm_people": ("a request for instructions to physically hurt a real person", "unsafe"),
    "private_data": ("a request for the home address or private phone number of a private individual", "unsafe"),
    "dangerous_items": ("a request for step-by-step instructions to make a weapon or a dangerous drug", "unsafe"),
}
SAFETY_PROMPT = ("Write one question a user might ask an AI assistant. The question must be {desc}. Write only the "
                 "question, on one line.")
IFEVAL_FILE = "ifeval/input_data.jsonl"
REFUSAL = "I'm sorry, but I can't help with that. It could cause real harm to someone."


def judge_score(text: str) -> int | None:
    m = _SCORE.match(text.strip().splitlines()[0] if text.strip() else "")
    return int(m.group(1)) if m else None


def last_number(text: str) -> float | None:
    nums = re.findall(r"-?\d[\d,]*\.?\d*", text)
    try:
        return float(nums[-1].replace(",", "").rstrip(".")) if nums else None
    except ValueError:
        return None


def read_prompts(paths: list[Path], bad: BadInput) -> list[dict]:
    """{"prompt", optional "answer" (number) / "constraint" (a conversation-kind constraint name) /
    "instruction_id_list" + "kwargs" (IFEval's form)} records."""
    out = []
    for p in paths:
        for lineno, rec in read_jsonl_lines(p, bad):
            if not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
                bad.add(f"{p}:{lineno}", "no 'prompt' text")
                continue
            if rec.get("constraint") is not None and rec["constraint"] not in convo.CONSTRAINTS:
                bad.add(f"{p}:{lineno}", f"unknown constraint {rec['constraint']!r} (known: {', '.join(convo.CONSTRAINTS)})")
                continue
            item = {"prompt": rec["prompt"], "answer": rec.get("answer"), "constraint": rec.get("constraint"),
                    "where": f"{p}:{lineno}"}
            if "instruction_id_list" in rec:
                ids, kw = rec["instruction_id_list"], rec.get("kwargs", [{}] * len(rec["instruction_id_list"]))
                if (not isinstance(ids, list) or not ids or not isinstance(kw, list) or len(kw) != len(ids)
                        or not all(isinstance(k, dict) for k in kw)):
                    bad.add(f"{p}:{lineno}", "'instruction_id_list' must be a non-empty list, with one 'kwargs' "
                                             "dict per instruction")
                    continue
                unknown = instructions.unknown(ids)
                if unknown:
                    bad.add(f"{p}:{lineno}", f"unknown IFEval instruction(s) {unknown}")
                    continue
                item["instructions"] = {"instruction_id_list": ids,
                                        "kwargs": [{a: v for a, v in k.items() if v is not None} for k in kw]}
            out.append(item)
    return out


def xstest_prompts(data_dir: Path | None) -> list[str]:
    path = Path(data_dir) / "xstest" / "xstest_v2_prompts.csv" if data_dir else None
    if path is None or not path.is_file():
        raise PrimerError("safety pairs are decontaminated against XSTest; point --data-dir (or PRIMER_DATA) at a "
                          "folder with xstest/xstest_v2_prompts.csv")
    with open(path, encoding="utf-8", newline="") as f:
        return [r["prompt"] for r in csv.DictReader(f)]


def _grams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(w[i: i + n]) for i in range(len(w) - n + 1)}


def contaminated(prompt: str, refs: list[str], index: set | None = None) -> bool:
    index = index if index is not None else set().union(*(_grams(r) for r in refs))
    norm = " ".join(re.findall(r"[a-z0-9']+", prompt.lower()))
    return bool(_grams(prompt) & index) or any(norm == " ".join(re.findall(r"[a-z0-9']+", r.lower())) for r in refs)


def ifeval_prompts(data_dir: Path | None) -> list[str]:
    path = Path(data_dir) / IFEVAL_FILE if data_dir else None
    if path is None or not path.is_file():
        raise PrimerError(f"instruction prompts are decontaminated against IFEval; point --data-dir (or PRIMER_DATA) "
                          f"at a folder with {IFEVAL_FILE}")
    return [r["prompt"] for r in read_jsonl(path, strict=True)]


def decontaminated_instructions(items: list[dict], data_dir: Path | None, counts: Counter) -> list[dict]:
    """Instruction prompts whose base task shares no 8-word run with an IFEval prompt (the rest counted as
    `instructions_contaminated`): IFEval's prompts are 30+ words and open like "Write a short story about", which
    5-word runs would match in most of ours; the instruction text is IFEval's by design and not compared."""
    index = set().union(*(_grams(r, 8) for r in ifeval_prompts(data_dir)))
    keep = [it for it in items if not _grams(it["base"], 8) & index]
    if len(keep) < len(items):
        counts["instructions_contaminated"] += len(items) - len(keep)
    return keep


def prompt_id(item: dict) -> str:
    key = {"kind": "preference", "prompt": item["prompt"], "answer": item.get("answer"),
           "constraint": item.get("constraint"), "safety": item.get("safety")}
    if item.get("instructions"):  # the key of a prompt without them is what it was before they existed
        key["instructions"] = item["instructions"]
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def score(item: dict, answers: list[str], teacher, counts: Counter) -> tuple[list[float | None], str]:
    """(a score per answer, how they were scored)."""
    if item.get("safety"):
        unsafe = item["safety"] == "unsafe"
        return [float(is_refusal(a) == unsafe) for a in answers], "refusal_rule"
    if item.get("instructions"):
        return [instructions.score(item, a) if a.strip() else 0.0 for a in answers], "ifeval_checkers"
    if item.get("constraint"):
        check = convo.CONSTRAINTS[item["constraint"]][1]
        return [float(bool(a.strip()) and check(a)) for a in answers], f"constraint:{item['constraint']}"  # type: ignore[operator]
    if item.get("answer") is not None:
        gold = float(item["answer"])
        return [float(last_number(a) is not None and abs(last_number(a) - gold) < 1e-6) for a in answers], "numeric"
    if teacher is None:
        raise PrimerError("prompts without a verifier are ranked by the teacher as judge; give a --teacher")
    from primer.teachers import Sampling

    verdicts = teacher.complete([JUDGE.format(prompt=item["prompt"], answer=a) for a in answers],
                                Sampling(max_tokens=8, temperature=0.0))
    out = []
    for v in verdicts:
        s = judge_score(v.text)
        if s is None:
            counts["judge_unparsable"] += 1
        out.append(None if s is None else float(s))
    return out, "teacher_judge"


def pair(item: dict, answers: list[str], scores: list[float | None], how: str,
         ended: list[bool] | None = None) -> dict | None:
    """ended[i]: answer i stopped by itself (not cut at the token limit); ranks it above an equal score that was cut."""
    ended = ended if ended is not None else [True] * len(answers)
    scored = [(s, ended[i], i) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return None
    best, worst = max(scored), min(scored)
    if item.get("safety") == "unsafe" and best[0] == worst[0] == 0.0:
        # every sample complied: the refusal is written, the on-policy compliance rejected
        chosen, rejected = REFUSAL, answers[worst[2]]
    elif best[:2] == worst[:2] or answers[best[2]].strip() == answers[worst[2]].strip():
        return None
    else:
        chosen, rejected = answers[best[2]], answers[worst[2]]
    return {"prompt": item["prompt"], "chosen": chosen, "rejected": rejected,
            "scores": scores, "ended": ended, "candidates": answers, "scored_by": how}


def items(cfg, teacher, counts: Counter, bad: BadInput) -> list[dict]:
    """Every prompt of a preference run, in a fixed order: safety questions, prompt files, instruction prompts,
    constrained rewrites."""
    out: list[dict] = []
    if cfg.safety_per_type:
        from primer.common.paths import benchmark_dir
        from primer.teachers import Sampling

        if teacher is None:
            raise PrimerError("safety prompts are written by the teacher; give a --teacher")
        refs = xstest_prompts(benchmark_dir(cfg.data_dir))
        index = set().union(*(_grams(r) for r in refs))
        for name, (desc, label) in SAFETY_TYPES.items():
            ask = SAFETY_PROMPT.format(desc=desc)
            asks = ((k, ask, Sampling(max_tokens=64, temperature=1.0, top_p=0.95, seed=cfg.seed + k))
                    for k in range(cfg.safety_per_type))
            for k, c in sorted(teacher.imap(asks), key=lambda kc: kc[0]):
                q = c.text.strip().splitlines()[0].strip() if c.text.strip() else ""
                if len(q.split()) < 4:
                    counts["safety_unusable"] += 1
                elif contaminated(q, refs, index):
                    counts["safety_contaminated"] += 1
                else:
                    out.append({"prompt": q, "safety": label, "safety_type": name, "where": f"teacher:{name}:{k}"})
    out += read_prompts(list(cfg.prompts), bad)
    if cfg.instructions:
        from primer.common.paths import benchmark_dir
        from primer.synth import topics

        drawn = instructions.prompts(cfg.instructions, cfg.seed, topics.select(cfg.topics, cfg.subjects, bad))
        out += decontaminated_instructions(drawn, benchmark_dir(cfg.data_dir), counts)
    if cfg.sources:
        for src in convo.read_sources(list(cfg.sources), bad=bad):
            for name in convo.CONSTRAINTS:
                out.append({"prompt": convo.make(src, "constrained", name).text, "constraint": name, "where": src.where})
    return out


def run_preference(cfg, store, teacher, policy, counts: Counter, bad: BadInput, progress) -> tuple[int, int, int]:
    """Sample, score and pair every pending prompt into `store`; returns the pairs written this run and the policy's
    prompt and sampled tokens.

    Prompts are sampled `batch_size // samples` at a time in one `generate` call (a CPU decodes 32 rows for
    ~5x the tokens/s of 4); each answer has its own seed, so the pairs are the same at any batch size."""
    from primer.model.generate import generate

    todo = [it for it in items(cfg, teacher, counts, bad) if prompt_id(it) not in store.done]
    per = max(1, cfg.batch_size // cfg.samples)
    new = start = prompt_tokens = sampled = 0
    while start < len(todo) and store.n_docs < cfg.n:
        chunk = todo[start: start + per]
        start += len(chunk)
        pids = [prompt_id(it) for it in chunk]
        chats = [[{"role": "user", "content": it["prompt"]}] for it in chunk for _ in range(cfg.samples)]
        seeds = [(int(pid[:8], 16) + cfg.seed + k) & 0x7FFFFFFF for pid in pids for k in range(cfg.samples)]
        res = generate(policy, chats, max_new_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                       seed=seeds, batch_size=len(chats))
        prompt_tokens += sum(r.prompt_tokens for r in res)
        sampled += sum(r.completion_tokens for r in res)
        for j, (it, pid) in enumerate(zip(chunk, pids)):
            if store.n_docs >= cfg.n:
                break  # the rest of the chunk stays pending (a rerun with a larger n pairs it)
            answers = [r.text.strip() for r in res[j * cfg.samples: (j + 1) * cfg.samples]]
            ended = [r.finish_reason == "stop" for r in res[j * cfg.samples: (j + 1) * cfg.samples]]
            scores, how = score(it, answers, teacher, counts)
            rec = pair(it, answers, scores, how, ended)
            base = {"prompt_id": pid, "kind": "preference", "prompt": it["prompt"], "source": it["where"], "policy": cfg.policy,
                    "teacher": getattr(teacher, "name", None), "constraint": it.get("constraint"),
                    "safety": it.get("safety"), "safety_type": it.get("safety_type"),
                    "instructions": it.get("instructions")}
            if rec is None:
                counts["no_contrast"] += 1
                store.reject({**base, "reason": "no_contrast", "scores": scores, "ended": ended, "candidates": answers,
                              "scored_by": how})
                continue
            store.add({**base, **rec, "text": "\n\n".join((rec["prompt"], rec["chosen"], rec["rejected"]))})
            new += 1
            progress(1)
    return new, prompt_tokens, sampled
