"""Perturbation suites: new items with correct answers, to see whether a score survives them.

A `Perturbation` maps one task document to a changed document (or None when it does not apply)
and may also change how the prompt is written. Each keeps the answer correct by construction:

  * `names`     people's names swapped for others of the same gender (consistently, possessives
                too), plus interchangeable countable objects (apples -> pears) in GSM8K.
  * `noop`      GSM-NoOp: an irrelevant but plausible sentence with a number, placed before the
                question sentence; the answer is unchanged.
  * `linebreak` each sentence of the question on its own line (the phi-1.5 example).
  * `spacing`   doubled spaces between words and around the question.
  * `framing`   "Question:/Answer:" replaced by "Q:/A:" (and the other way round when absent).
  * `zeroshot`  the task's few-shot examples removed (compared against the few-shot original).
  * `numbers`   GSM8K new numbers from the rebuilt calculator graph (`gsm_numbers`).
  * `symbolic`  GSM-Symbolic templates instantiated with new values (`symbolic`).
  * `shuffle`   multiple choice: options reordered (gold follows), shown as a lettered list.
  * `relabel`   multiple choice: the lettered list labelled 1-4 instead of A-D.

Multiple choice in the usual cloze form scores each option on its own, so order cannot matter;
`shuffle` and `relabel` therefore compare against `mcf`, the same options as a lettered list in
their original order (the MMLU-style prompt), which is the format where order and labels can
matter. Which perturbations apply to which task is decided in `suites`.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]

MALE = ("James John Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel Matthew "
        "Anthony Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy Ronald Edward "
        "Jason Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin "
        "Samuel Gregory Alexander Frank Patrick Raymond Jack Dennis Jerry Tyler Aaron Jose Adam Nathan Henry "
        "Douglas Zachary Peter Kyle Ethan Walter Noah Jeremy Christian Keith Roger Terry Gerald Harold Sean "
        "Austin Carl Arthur Lawrence Dylan Jesse Jordan Bryan Billy Joe Bruce Gabriel Logan Albert Willie "
        "Alan Juan Wayne Elijah Randy Roy Vincent Ralph Eugene Russell Bobby Mason Philip Louis Tom Tim Mike "
        "Bill Bob Jim Ben Carlos Jake Josh Fred Max Marcus Jamal Johnny Tony Luke Stanley Harry Steve Jeff "
        "Boris Andy Joey Ali Hassan Omar Ahmed Ravi Raj Kenji Hiroshi Pedro Diego Mateo Luis Ivan Dmitri "
        "Ken Greg Dan Dave Frankie Toby Oliver Leo Liam Lucas Caleb Isaac Owen Felix Hugo Oscar").split()
FEMALE = ("Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Nancy Lisa Betty "
          "Margaret Sandra Ashley Kimberly Emily Donna Michelle Dorothy Carol Amanda Melissa Deborah "
          "Stephanie Rebecca Sharon Laura Cynthia Kathleen Amy Shirley Angela Helen Anna Brenda Pamela "
          "Nicole Emma Samantha Katherine Christine Debra Rachel Catherine Carolyn Janet Ruth Maria Heather "
          "Diane Virginia Julie Joyce Victoria Olivia Kelly Christina Lauren Joan Evelyn Judith Megan Cheryl "
          "Andrea Hannah Martha Jacqueline Frances Gloria Ann Anne Teresa Kathryn Sara Janice Jean Alice "
          "Madison Doris Abigail Julia Judy Grace Denise Amber Marilyn Beverly Danielle Theresa Sophia Marie "
          "Diana Brittany Natalie Isabella Charlotte Rose Alexis Kayla Sally Jane Jenny Jill Cindy Susie "
          "Lily Carly Jenna Sue Ellen Melanie Madeline Dora Mia Ava Chloe Zoe Ella Nora Ruby Leah Maya Aisha "
          "Fatima Priya Yuki Mei Sofia Lucia Elena Olga Ingrid Freya Tina Kate Katy Lucy Molly Sasha Nadia "
          "Rosa Carmen Gina Paula Wendy Tara Vera Iris Hazel Stella").split()
PLACEHOLDER_FREE = {"Mark", "Will", "Bill", "Jack", "Rose", "Grace", "May", "April", "June", "Joy", "Hope"}
# Interchangeable countable things: swapping them never changes a GSM8K answer.
OBJECTS = [
    ("apples", "pears", "oranges", "peaches", "plums", "lemons"),
    ("marbles", "beads", "buttons", "stickers", "stamps", "coins"),
    ("cookies", "cupcakes", "muffins", "brownies", "donuts", "biscuits"),
    ("pencils", "crayons", "markers", "pens", "erasers"),
    ("books", "comics", "magazines", "notebooks"),
    ("candies", "lollipops", "chocolates", "gumdrops"),
]

_SUBJECT = re.compile(r"\b([A-Z][a-z]{2,})(?='s\b| (?:has|had|is|was|wants|buys|bought|goes|went|needs|sells|sold|"
                      r"makes|made|gets|got|earns|decides|decided|spends|spent|pays|paid|runs|takes|took|can|will)\b)")
_NOT_NAMES = {"The", "This", "That", "There", "Each", "Every", "One", "She", "Her", "His", "They", "Their", "It", "What",
              "How", "Which", "Who", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
              "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December", "School", "Company", "Store", "Team", "Class", "Grandma", "Grandpa", "Mom", "Dad"}
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


@dataclass
class Perturbation:
    """One way to change items. `apply(doc, rng)` -> new doc or None (not applicable).

    What differs between perturbations is declared here, so the audit never branches on a name.
    """

    name: str
    description: str
    apply: Callable[[Doc, random.Random], Doc | None] = lambda d, r: d
    prompt: Callable[[str], str] | None = None
    """rewrites the prompt text the task builds (e.g. Question:/Answer: -> Q:/A:)"""
    shots: int | None = None
    """overrides the number of few-shot examples: a change of setting, not of the items"""
    baseline: str = "original"
    """the condition it is compared with ('original', or a baseline perturbation such as 'mcf')"""
    applies_to: str = "any"
    """'any', or the `Task.doc_schema` whose documents it rewrites (e.g. 'gsm8k')"""
    randomised: bool = False
    """draws its change at random: `AuditConfig.variants` copies per item"""
    content: bool = False
    """changes what the item says, not only its format: a significant drop is evidence about the score"""
    matched: bool = False
    """keeps the item's kind and length: a matched copy for Min-K%++ and verbatim completion"""
    is_baseline: bool = False
    """a format other perturbations are compared with, scored on the unchanged items (e.g. 'mcf')"""
    lettered: bool = False
    """multiple choice: show the options as a labelled list and score the labels (MMLU's prompt)"""
    labels: str = "ABCDEFGHIJ"
    """multiple choice: the label alphabet of the lettered list"""
    prepare: Callable[[list[Doc], list[Doc], Any, int], tuple[list[Doc], dict[str, Any]]] | None = None
    """(audited docs, all of the task's docs, data dir, seed) -> (docs, coverage figures): runs once
    before variants are built (e.g. GSM-Symbolic finds each item's template)"""


# -- text helpers ---------------------------------------------------------------------------------
def question_field(doc: Doc) -> str | None:
    """The field holding the question text, for the schemas primer's tasks use."""
    for k in ("question", "ctx", "goal", "query", "sentence", "passage"):
        if isinstance(doc.get(k), str):
            return k
    return None


def _replace_words(text: str, mapping: dict[str, str]) -> str:
    if not mapping:
        return text
    pat = re.compile(r"\b(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True))) + r")\b")
    return pat.sub(lambda m: mapping[m.group(1)], text)


def swap_names(doc: Doc, rng: random.Random, fields: tuple[str, ...] = ("question", "answer")) -> Doc | None:
    """Every known first name -> another of the same gender not in the text; also objects."""
    text = " ".join(str(doc.get(f, "")) for f in fields)
    present = set(re.findall(r"\b[A-Z][a-z]+\b", text))
    mapping: dict[str, str] = {}
    for pool in (MALE, FEMALE):
        names = [n for n in pool if n in present and not _sentence_word_only(n, text)]
        free = [n for n in pool if n not in present and n not in PLACEHOLDER_FREE]
        rng.shuffle(free)
        for n in names:
            if n not in mapping and free:
                mapping[n] = free.pop()
    # Names not in the lists ("Kylar has ..."): a capitalised word acting as a subject; gender from
    # the pronouns of the text when they are unambiguous.
    low = text.lower()
    she, he = bool(re.search(r"\b(she|her|hers)\b", low)), bool(re.search(r"\b(he|him|his)\b", low))
    for n in sorted(set(_SUBJECT.findall(text)) - set(mapping) - _NOT_NAMES - set(MALE) - set(FEMALE)):
        pool = FEMALE if she and not he else MALE if he and not she else (MALE + FEMALE)
        free = [x for x in pool if x not in present and x not in mapping.values() and x not in PLACEHOLDER_FREE]
        if free:
            mapping[n] = rng.choice(free)
    words = set(re.findall(r"\b[a-z]+\b", text))
    for group in OBJECTS:
        have = [w for w in group if w in words]
        if len(have) == 1:
            others = [w for w in group if w not in words]
            new = rng.choice(others)
            mapping[have[0]] = new
            mapping[have[0][:-1]] = new[:-1] if not new.endswith("ies") else new[:-3] + "y"
            if have[0].endswith("ies"):
                mapping[have[0][:-3] + "y"] = mapping.pop(have[0][:-1])
    if not mapping:
        return None
    out = dict(doc)
    for f in fields:
        if isinstance(doc.get(f), str):
            out[f] = _replace_words(doc[f], mapping)
    out["_names"] = mapping
    return out


def _sentence_word_only(name: str, text: str) -> bool:
    """'Will'/'Mark' as verbs at a sentence start are not names; skip words only seen lower-cased too."""
    return name in PLACEHOLDER_FREE and re.search(rf"\b{name.lower()}\b", text) is not None


_UNITS = set("times minutes hours days weeks months years seconds dollars cents miles feet inches pounds ounces "
             "meters kilometers gallons liters percent points degrees pages".split())
_NOOP_NOUN = [
    "Note that {k} of the {noun} were a little smaller than the others.",
    "{k} of the {noun} had been bought on a rainy day.",
    "Last year, there were {k} more {noun} at the same store.",
]
_NOOP_ANY = [
    "It was a sunny day, about {k} degrees warmer than the day before.",
    "The shop nearby had opened {k} years earlier.",
    "A friend mentioned that {k} people had asked about it the week before.",
]


def noop_clause(doc: Doc, rng: random.Random, field_name: str = "question") -> Doc | None:
    """GSM-NoOp: insert an irrelevant sentence with a number before the question sentence."""
    q = doc.get(field_name)
    if not isinstance(q, str):
        return None
    sents = _SENT.split(q.strip())
    if len(sents) < 2:
        return None
    nouns = [w for w in re.findall(r"\b\d+\s+([a-z]{3,}s)\b", q) if w not in _UNITS]
    k = rng.randint(2, 9)
    if nouns:
        clause = rng.choice(_NOOP_NOUN).format(k=k, noun=rng.choice(nouns))
    else:
        clause = rng.choice(_NOOP_ANY).format(k=k)
    new = " ".join(sents[:-1] + [clause, sents[-1]])
    return {**doc, field_name: new, "_noop": clause}


def linebreaks(doc: Doc, rng: random.Random, field_name: str | None = None) -> Doc | None:
    f = field_name or question_field(doc)
    if f is None:
        return None
    sents = _SENT.split(doc[f].strip())
    if len(sents) < 2:
        return None
    return {**doc, f: "\n".join(sents)}


def spacing(doc: Doc, rng: random.Random, field_name: str | None = None) -> Doc | None:
    f = field_name or question_field(doc)
    if f is None:
        return None
    return {**doc, f: "  " + re.sub(r" +", "  ", doc[f].strip()) + " "}


def reframe(prompt: str) -> str:
    """'Question: ...\\nAnswer:' -> 'Q: ...\\nA:' (and bare prompts get 'Q:/A:' framing)."""
    if "Question:" in prompt or "Answer:" in prompt:
        return prompt.replace("Question:", "Q:").replace("Answer:", "A:")
    return f"Q: {prompt.rstrip()}\nA:"


# -- multiple choice --------------------------------------------------------------------------------
def shuffle_options(doc: Doc, rng: random.Random) -> Doc | None:
    """Store a random non-identity permutation; `wrap_mc_task` applies it to choices and gold."""
    n = doc.get("_n_choices")
    if not n or n < 2:
        return None
    perm = list(range(n))
    while perm == list(range(n)):
        rng.shuffle(perm)
    return {**doc, "_perm": perm}


def mc_task(task, p: Perturbation):
    """The task a perturbation is scored with: for multiple choice, `wrap_mc_task` with its format."""
    return wrap_mc_task(task, lettered=p.lettered, labels=p.labels) if task.kind == "multiple_choice" else task


def wrap_mc_task(task, *, lettered: bool = False, labels: str = "ABCDEFGHIJ"):
    """A copy of a multiple-choice `Task` that honours `_perm` and can show a lettered list.

    lettered: the prompt lists the options ("A. ...") and the choices scored are the labels, as
    MMLU's prompt does (its metric is accuracy: a label's length says nothing); labels: the label
    alphabet ("ABCD", "1234").
    """
    base_text, base_choice, base_target = task.doc_to_text, task.doc_to_choice, task.doc_to_target

    def choices(d):
        c = base_choice(d)
        perm = d.get("_perm") or list(range(len(c)))
        return [c[j] for j in perm]

    def target(d):
        t = base_target(d)
        perm = d.get("_perm") or list(range(len(base_choice(d))))
        return perm.index(t)

    if not lettered:
        return dataclasses.replace(task, doc_to_choice=choices, doc_to_target=target)

    def text(d):
        ctx = base_text(d)
        if not isinstance(ctx, str):
            ctx = str(ctx)
        stem = ctx[: -len("Answer:")].rstrip() if ctx.rstrip().endswith("Answer:") else ctx.rstrip()
        opts = "\n".join(f"{labels[i]}. {c}" for i, c in enumerate(choices(d)))
        return f"{stem}\n{opts}\nAnswer:"

    return dataclasses.replace(
        task, doc_to_text=text, doc_to_choice=lambda d: [labels[i] for i in range(len(choices(d)))],
        doc_to_target=target, name=task.name + "_mcf", metrics=("acc",),
    )
