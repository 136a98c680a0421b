"""Where each benchmark folder comes from on the Hugging Face Hub, and how its records become the files primer reads.

A `Folder` is one directory of a benchmark data dir (laid out like shared/benchmarks, which
`primer.eval.tasks` reads): the HF dataset splits it is made from -- the dataset ids and configs
lm-evaluation-harness's task yamls name (`lm_eval/tasks/<task>/*.yaml`; lm-eval pins no revision, so
`primer data pull` records the commit it fetched) -- and `convert`, which turns those records (the
HF schema) into the folder's files. The file formats are those of shared/benchmarks, so one loader
per task reads a pulled folder and the shared one alike; where the shared copy lost a field the HF
record has (HellaSwag's ctx_a/ctx_b, WinoGrande's sentence and options, Social IQa's label), the pulled
file keeps it as an extra field and the loader prefers it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from primer.errors import PrimerError

Records = list[dict[str, Any]]


@dataclass(frozen=True)
class Source:
    dataset: str
    """HF dataset id, as lm-eval's task yaml names it (dataset_path)."""
    config: str | None
    """HF config name (dataset_name); None for the default."""
    split: str


@dataclass(frozen=True)
class OutFile:
    """One file of a folder: its bytes, record count and the unit the MANIFEST counts it in."""

    data: bytes
    records: int
    unit: str
    fields: tuple[str, ...] = ()
    """the fields (JSON) or columns (CSV) of every record, listed in the MANIFEST and checked by `primer data check`"""


@dataclass(frozen=True)
class Folder:
    name: str
    sources: dict[str, Source]
    """key -> HF split; `convert` gets the records of each key."""
    convert: Callable[[dict[str, Records]], dict[str, OutFile]]
    """records per key -> relative path (inside the folder) -> file."""
    licence: str
    """What the dataset's card / upstream repository states (the pulled MANIFEST quotes it)."""
    lm_eval: str
    """The lm-eval task yaml whose dataset this is."""
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """key -> HF fields `convert` reads (a record without one is an error naming the dataset and field)."""


def need(records: Records, fields: tuple[str, ...], src: Source) -> None:
    """Fail with one line when the HF records lack a field the conversion reads (a schema change upstream)."""
    if not records:
        raise PrimerError(f"{src.dataset} ({src.config or 'default'}, {src.split}) has no records")
    missing = [f for f in fields if f not in records[0]]
    if missing:
        raise PrimerError(f"{src.dataset} ({src.config or 'default'}, {src.split}): records lack {missing} "
                          f"(have {sorted(records[0])}); the dataset's schema changed -- pin an older revision")


# -- file writers ------------------------------------------------------------------------------
def jsonl(rows: Records) -> OutFile:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return OutFile(text.encode("utf-8"), len(rows), "JSON lines", tuple(rows[0]) if rows else ())


def lines(items: list[str]) -> OutFile:
    return OutFile("".join(f"{x}\n" for x in items).encode("utf-8"), len(items), "lines")


def csv_rows(rows: list[list[str]], columns: tuple[str, ...], header: bool) -> OutFile:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    if header:
        w.writerow(columns)
    w.writerows(rows)
    unit = "CSV rows (plus 1 header line)" if header else "CSV rows (no header)"
    return OutFile(buf.getvalue().encode("utf-8"), len(rows), unit, columns)


# -- conversions (HF schema -> the shared/benchmarks formats the loaders read) -----------------
def _piqa(r: dict[str, Records]) -> dict[str, OutFile]:
    v = r["validation"]
    return {"valid.jsonl": jsonl([{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"]} for d in v]),
            "valid-labels.txt": lines([str(int(d["label"])) for d in v])}


def _hellaswag(r: dict[str, Records]) -> dict[str, OutFile]:
    return {"hellaswag_val.jsonl": jsonl([
        {"idx": i, "activity_label": d["activity_label"], "ctx": d["ctx"], "label": int(d["label"]),
         "endings": list(d["endings"]), "ctx_a": d["ctx_a"], "ctx_b": d["ctx_b"]}
        for i, d in enumerate(r["validation"])])}


def _winogrande(r: dict[str, Records]) -> dict[str, OutFile]:
    rows = []
    for d in r["validation"]:
        i = d["sentence"].index("_")
        rows.append({"context_options": [d["sentence"][:i] + d["option1"], d["sentence"][:i] + d["option2"]],
                     "continuation": d["sentence"][i + 1:].strip(), "gold": int(d["answer"]) - 1,
                     **{k: d[k] for k in ("sentence", "option1", "option2", "answer")}})
    return {"winogrande_dev.jsonl": jsonl(rows)}


def _siqa(r: dict[str, Records]) -> dict[str, OutFile]:
    rows = []
    for d in r["validation"]:
        options = [d["answerA"], d["answerB"], d["answerC"]]
        rows.append({"context": d["context"], "question": d["question"], "options": options,
                     "answer": options[int(d["label"]) - 1], "label": str(d["label"])})
    return {"siqa_dev.jsonl": jsonl(rows)}


def _mc_row(query: str, choices: dict[str, list[str]], key: str) -> dict[str, Any]:
    return {"query": query, "choices": list(choices["text"]), "gold": list(choices["label"]).index(key.strip())}


def _openbookqa(r: dict[str, Records]) -> dict[str, OutFile]:
    return {"openbookqa_test.jsonl": jsonl([_mc_row(d["question_stem"], d["choices"], d["answerKey"])
                                            for d in r["test"]])}


def _arc(r: dict[str, Records]) -> dict[str, OutFile]:
    return {f"arc_{key}_test.jsonl": jsonl([_mc_row("Question: " + d["question"], d["choices"], d["answerKey"])
                                            for d in r[key]]) for key in ("easy", "challenge")}


def _boolq(r: dict[str, Records]) -> dict[str, OutFile]:
    return {"boolq_dev.jsonl": jsonl([{"query": f"Passage: {d['passage']}\nQuestion: {d['question']}?",
                                       "choices": ["no", "yes"], "gold": int(d["label"])} for d in r["validation"]])}


def _triviaqa(r: dict[str, Records]) -> dict[str, OutFile]:
    return {"triviaqa_sm_sub.jsonl": jsonl([{"context": f"Question: {d['question']}\nAnswer:",
                                             "answer": d["answer"]["value"], "aliases": list(d["answer"]["aliases"])}
                                            for d in r["validation"]])}


def _squad(r: dict[str, Records]) -> dict[str, OutFile]:
    """The official v1.1 JSON: articles (consecutive records of one title) holding paragraphs holding questions."""
    data: list[dict] = []
    n_par = 0
    for d in r["validation"]:
        if not data or data[-1]["title"] != d["title"]:
            data.append({"title": d["title"], "paragraphs": []})
        pars = data[-1]["paragraphs"]
        if not pars or pars[-1]["context"] != d["context"]:
            pars.append({"context": d["context"], "qas": []})
            n_par += 1
        a = d["answers"]
        pars[-1]["qas"].append({"answers": [{"answer_start": int(s), "text": t} for t, s in zip(a["text"], a["answer_start"])],
                                "question": d["question"], "id": d["id"]})
    text = json.dumps({"data": data, "version": "1.1"}, ensure_ascii=False)
    n = len(r["validation"])
    return {"dev-v1.1.json": OutFile(text.encode("utf-8"), n, f"questions ({len(data)} articles, {n_par} paragraphs)")}


MMLU_SPLITS = {"test": "test", "validation": "val", "dev": "dev"}


def _mmlu(r: dict[str, Records]) -> dict[str, OutFile]:
    out: dict[str, OutFile] = {}
    for key, sub in MMLU_SPLITS.items():
        by_subject: dict[str, list[list[str]]] = {}
        for d in r[key]:
            by_subject.setdefault(d["subject"], []).append([d["question"], *d["choices"], "ABCD"[int(d["answer"])]])
        for subject, rows in sorted(by_subject.items()):
            out[f"{sub}/{subject}_{sub}.csv"] = csv_rows(rows, ("question", "A", "B", "C", "D", "answer"), header=False)
    return out


def _lambada(r: dict[str, Records]) -> dict[str, OutFile]:
    rows = []
    for d in r["test"]:
        words = d["text"].split(" ")  # lm-eval splits on single spaces: context = all words but the last
        rows.append({"context": " ".join(words[:-1]), "continuation": " " + words[-1]})
    return {"lambada_openai.jsonl": jsonl(rows)}


def _wikitext(r: dict[str, Records]) -> dict[str, OutFile]:
    text = "".join(p if p.endswith("\n") else p + "\n" for p in (d["page"] for d in r["test"]))
    return {"wikitext-2-raw-test.txt": OutFile(text.encode("utf-8"), text.count("\n"), "lines")}


def _gsm8k(r: dict[str, Records]) -> dict[str, OutFile]:
    return {f"{k}.jsonl": jsonl([{"question": d["question"], "answer": d["answer"]} for d in r[k]])
            for k in ("test", "train")}


HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def _humaneval(r: dict[str, Records]) -> dict[str, OutFile]:
    return {"HumanEval.jsonl": jsonl([{k: d[k] for k in HUMANEVAL_FIELDS} for d in r["test"]])}


MBPP_FIELDS = ("text", "code", "task_id", "test_setup_code", "test_list", "challenge_test_list")


def _mbpp(r: dict[str, Records]) -> dict[str, OutFile]:
    rows = sorted((d for k in ("prompt", "test", "validation", "train") for d in r[k]), key=lambda d: int(d["task_id"]))
    return {"mbpp.jsonl": jsonl([{k: (list(d[k]) if isinstance(d[k], (list, tuple)) else d[k]) for k in MBPP_FIELDS}
                                 for d in rows])}


def _ifeval(r: dict[str, Records]) -> dict[str, OutFile]:
    # Arrow stores every kwargs dict with the union of all keys (absent ones None); the original file has only
    # the instruction's own arguments, which is what the checkers are given either way.
    return {"input_data.jsonl": jsonl([
        {"key": int(d["key"]), "prompt": d["prompt"], "instruction_id_list": list(d["instruction_id_list"]),
         "kwargs": [{k: v for k, v in kw.items() if v is not None} for kw in d["kwargs"]]} for d in r["train"]])}


def _xstest(r: dict[str, Records]) -> dict[str, OutFile]:
    rows = []
    for d in r["train"]:
        pid = str(d["id"])
        rows.append(["", pid if pid.startswith("v2-") else f"v2-{pid}", d["type"], d["prompt"], d.get("focus") or "",
                     d.get("note") or ""])
    return {"xstest_v2_prompts.csv": csv_rows(rows, ("id_v1", "id_v2", "type", "prompt", "focus", "note"), header=True)}


def _card(dataset: str, upstream: str) -> str:
    return f"{upstream}; see the dataset card https://huggingface.co/datasets/{dataset}"


FOLDERS: dict[str, Folder] = {f.name: f for f in [
    Folder("piqa", {"validation": Source("baber/piqa", None, "validation")}, _piqa,
           _card("baber/piqa", "upstream (ybisk/piqa): Academic Free License v3.0"), "piqa/piqa.yaml",
           {"validation": ("goal", "sol1", "sol2", "label")}),
    Folder("hellaswag", {"validation": Source("Rowan/hellaswag", None, "validation")}, _hellaswag,
           _card("Rowan/hellaswag", "upstream (rowanz/hellaswag): MIT"), "hellaswag/hellaswag.yaml",
           {"validation": ("activity_label", "ctx_a", "ctx_b", "ctx", "endings", "label")}),
    Folder("winogrande", {"validation": Source("allenai/winogrande", "winogrande_xl", "validation")}, _winogrande,
           _card("allenai/winogrande", "as stated on the card"), "winogrande/default.yaml",
           {"validation": ("sentence", "option1", "option2", "answer")}),
    Folder("siqa", {"validation": Source("lighteval/siqa", None, "validation")}, _siqa,
           _card("lighteval/siqa", "as stated on the card"), "siqa/siqa.yaml",
           {"validation": ("context", "question", "answerA", "answerB", "answerC", "label")}),
    Folder("openbookqa", {"test": Source("allenai/openbookqa", "main", "test")}, _openbookqa,
           _card("allenai/openbookqa", "as stated on the card"), "openbookqa/openbookqa.yaml",
           {"test": ("question_stem", "choices", "answerKey")}),
    Folder("arc", {"easy": Source("allenai/ai2_arc", "ARC-Easy", "test"),
                   "challenge": Source("allenai/ai2_arc", "ARC-Challenge", "test")}, _arc,
           _card("allenai/ai2_arc", "AI2: CC BY-SA 4.0"), "arc/arc_easy.yaml, arc/arc_challenge.yaml",
           {k: ("question", "choices", "answerKey") for k in ("easy", "challenge")}),
    Folder("boolq", {"validation": Source("aps/super_glue", "boolq", "validation")}, _boolq,
           _card("aps/super_glue", "as stated on the card"), "super_glue/boolq/default.yaml",
           {"validation": ("question", "passage", "label")}),
    Folder("triviaqa", {"validation": Source("mandarjoshi/trivia_qa", "rc.nocontext", "validation")}, _triviaqa,
           _card("mandarjoshi/trivia_qa", "as stated on the card"), "triviaqa/default.yaml",
           {"validation": ("question", "answer")}),
    Folder("squad", {"validation": Source("rajpurkar/squad", None, "validation")}, _squad,
           _card("rajpurkar/squad", "upstream (rajpurkar/SQuAD-explorer): CC BY-SA 4.0"),
           "(primer's squad: SQuAD v1.1 with lm-eval's squadv2 prompt)",
           {"validation": ("id", "title", "context", "question", "answers")}),
    Folder("mmlu", {k: Source("cais/mmlu", "all", k) for k in MMLU_SPLITS}, _mmlu,
           _card("cais/mmlu", "upstream (hendrycks/test): MIT"),
           "mmlu/default/_default_template_yaml (one config per subject; the 'all' config holds the same records)",
           {k: ("question", "subject", "choices", "answer") for k in MMLU_SPLITS}),
    Folder("lambada", {"test": Source("EleutherAI/lambada_openai", "default", "test")}, _lambada,
           _card("EleutherAI/lambada_openai", "as stated on the card"), "lambada/lambada_openai.yaml",
           {"test": ("text",)}),
    Folder("wikitext2", {"test": Source("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test")},
           _wikitext, _card("EleutherAI/wikitext_document_level", "upstream WikiText: CC BY-SA 3.0 / GFDL"),
           "wikitext/wikitext.yaml", {"test": ("page",)}),
    Folder("gsm8k", {k: Source("openai/gsm8k", "main", k) for k in ("test", "train")}, _gsm8k,
           _card("openai/gsm8k", "upstream (openai/grade-school-math): MIT"), "gsm8k/gsm8k.yaml",
           {k: ("question", "answer") for k in ("test", "train")}),
    Folder("humaneval", {"test": Source("openai/openai_humaneval", None, "test")}, _humaneval,
           _card("openai/openai_humaneval", "upstream (openai/human-eval): MIT"), "humaneval/humaneval.yaml",
           {"test": HUMANEVAL_FIELDS}),
    Folder("mbpp", {k: Source("google-research-datasets/mbpp", "full", k)
                    for k in ("train", "test", "validation", "prompt")}, _mbpp,
           _card("google-research-datasets/mbpp", "as stated on the card"), "mbpp/mbpp.yaml",
           {k: MBPP_FIELDS[:5] for k in ("train", "test", "validation", "prompt")}),
    Folder("ifeval", {"train": Source("google/IFEval", None, "train")}, _ifeval,
           _card("google/IFEval", "upstream (google-research instruction_following_eval): CC BY 4.0 data"),
           "ifeval/ifeval.yaml", {"train": ("key", "prompt", "instruction_id_list", "kwargs")}),
    Folder("xstest", {"train": Source("Paul/XSTest", None, "train")}, _xstest,
           _card("Paul/XSTest", "upstream (paul-rottger/exaggerated-safety): CC BY 4.0"),
           "(not an lm-eval task; the authors' HF copy of xstest_v2_prompts.csv)",
           {"train": ("id", "prompt", "type")}),
]}


def convert(folder: Folder, records: dict[str, Records]) -> dict[str, OutFile]:
    """Check each split's records have the fields the conversion reads, then convert."""
    for key, src in folder.sources.items():
        need(records[key], folder.fields.get(key, ()), src)
    return folder.convert(records)
