"""Language modelling: LAMBADA (OpenAI) last-word prediction and WikiText-2 perplexity.

LAMBADA is lm-eval's lambada_openai: context = all words but the last, continuation = " " + last
word; `acc` = the continuation is the greedy completion, `perplexity` = exp(-mean log-likelihood).
WikiText is lm-eval's wikitext: each article is scored with rolling (disjoint-window)
log-likelihood after lm-eval's detokenizer; word perplexity counts words and bytes of the
*original* page, as lm-eval does.
"""

from __future__ import annotations

import re
from pathlib import Path

from primer.common.jsonl import read_jsonl
from primer.eval.tasks.core import Doc, Task, need_split

LAMBADA_FILE = "lambada/lambada_openai.jsonl"


def load_lambada(data_dir: Path, split: str) -> list[Doc]:
    need_split("lambada", split, ("test",))
    return [{"text": d["context"] + " " + d["continuation"].strip()}
            for d in read_jsonl(data_dir / LAMBADA_FILE, strict=True)]


LAMBADA = Task(
    name="lambada", version="1.0", kind="loglikelihood", files=(LAMBADA_FILE,),
    layout=f"{LAMBADA_FILE} (JSON lines with context and continuation = the last word)",
    loader=load_lambada, split="test",
    doc_to_text=lambda d: " ".join(d["text"].split(" ")[:-1]),
    doc_to_target=lambda d: " " + d["text"].split(" ")[-1],
    target_delimiter="",
    decontam=lambda d: d["text"],
    metrics=("acc", "perplexity"),
)

WIKITEXT_FILE = "wikitext2/wikitext-2-raw-test.txt"
_TITLE = re.compile(r"^ = [^=].* = $")


def load_wikitext(data_dir: Path, split: str) -> list[Doc]:
    """Split the raw test file into articles at top-level " = Title = " lines."""
    need_split("wikitext", split, ("test",))
    pages: list[list[str]] = []
    with open(data_dir / WIKITEXT_FILE, encoding="utf-8") as f:
        for line in f:
            if _TITLE.match(line.rstrip("\n")) or not pages:
                pages.append([])
            pages[-1].append(line)
    return [{"page": "".join(p)} for p in pages if "".join(p).strip()]


def wikitext_detokenizer(doc: Doc) -> str:
    """lm-eval's wikitext detokenizer (preprocess_wikitext.py), verbatim in behaviour."""
    string = doc["page"]
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


WIKITEXT = Task(
    name="wikitext", version="2.0", kind="rolling", files=(WIKITEXT_FILE,),
    layout=f"{WIKITEXT_FILE} (WikiText-2 raw test split, one paragraph a line, ' = Title = ' lines start articles)",
    loader=load_wikitext, split="test",
    doc_to_text=lambda d: "",
    doc_to_target=wikitext_detokenizer,
    decontam=lambda d: d["page"],
    metrics=("word_perplexity", "byte_perplexity", "bits_per_byte"),
    notes="articles are rebuilt from the local raw file (no blank lines), so perplexities are comparable "
          "only with runs on the same file",
)

TASKS = [LAMBADA, WIKITEXT]
