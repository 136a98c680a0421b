"""GSM-Symbolic templates (Apple, Mirzadeh et al. 2024) instantiated with new values.

A template (`templates/symbolic/NNNN.json`) is a GSM8K test question (`id_orig` = its index in
GSM8K test) whose `question_annotated` marks variables as `{var, default}` and ends with
`#init:` (how each variable is drawn), `#conditions:` (Python expressions that must hold) and
`#answer:` (a Python expression). Apple's generator is not published, so this is an
interpreter for the template language as the files use it; the named lists it refers to
(`names_male`, `currencies_sym`, ...) are filled with plausible values here. A template is used
only when (1) every name it refers to is known, and (2) evaluated at its own default values its
answer expression gives the original GSM8K answer; others are skipped and counted.

The expressions come from the dataset files, evaluated with no builtins beyond a short list of
arithmetic helpers, and a template using anything else is skipped.
"""

from __future__ import annotations

import json
import math
import random
import re
from fractions import Fraction
from pathlib import Path

from primer.audit.perturb import FEMALE, MALE, Doc, Perturbation

_PLACE = re.compile(r"\{\s*([A-Za-z_]\w*)\s*,\s*([^{}]*?)\s*\}")
_BAD = re.compile(r"__|\bimport\b|\blambda\b|\bopen\b|\bexec\b|\beval\b|\bglobals\b|\bgetattr\b")

LISTS = {
    "names": list(MALE + FEMALE),
    "names_male": list(MALE),
    "names_female": list(FEMALE),
    "currencies_sym": ["$", "€", "£"],
    "fruits": ["apples", "oranges", "pears", "peaches", "plums", "bananas"],
    "colors": ["red", "blue", "green", "yellow", "purple", "white", "black"],
    "weekdays": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "cities": ["Boston", "Chicago", "Denver", "Seattle", "Austin", "Miami"],
    "sports": ["soccer", "basketball", "tennis", "volleyball", "baseball"],
    "weights_sm": ["ounce", "gram"],
    "weights_med": ["pound", "kilogram"],
    "length_lg": ["mile", "kilometer"],
    "fraction_decimals": [0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75],
}


class _NP:
    """The `np.arange` the templates use, as exact-ish Python floats."""

    @staticmethod
    def arange(a, b, step=1):
        n = max(0, math.ceil((b - a) / step))
        return [round(a + i * step, 6) for i in range(n)]


def _env(rng: random.Random) -> dict:
    def sample(seq, k=None):
        seq = list(seq)
        return rng.choice(seq) if k is None else rng.sample(seq, k)

    def sample_sequential(seq, k):
        seq = list(seq)
        i = rng.randrange(0, len(seq) - k + 1)
        return seq[i: i + k]

    def shuffle_list(seq):
        seq = list(seq)
        rng.shuffle(seq)
        return seq

    return {
        "range": lambda *a: list(range(*a)), "sample": sample, "sample_sequential": sample_sequential,
        "frange": lambda a, b, s: _NP.arange(a, b, s), "np": _NP, "list": list, "shuffle_list": shuffle_list,
        "fix_floats": lambda xs: [round(x, 2) for x in xs], "numbers_within": lambda a, b: list(range(a, b + 1)),
        "divides": lambda a, b: b != 0 and abs(a / b - round(a / b)) < 1e-9,
        "is_int": lambda x: abs(x - round(x)) < 1e-9, "int": int, "round": round, "abs": abs,
        "min": min, "max": max, "sum": sum, "len": len, "float": float, "Fraction": Fraction,
        **LISTS,
    }


def _eval(expr: str, env: dict):
    if _BAD.search(expr):
        raise ValueError(f"refused expression: {expr}")
    return eval(expr, {"__builtins__": {}}, env)  # noqa: S307 - dataset expressions, no builtins


class Template:
    def __init__(self, data: dict):
        self.data = data
        self.id_orig = int(data["id_orig"])
        qa = data["question_annotated"]
        text, _, rest = qa.partition("#init:")
        self.text = text.strip()
        init, _, rest = rest.partition("#conditions:")
        cond, _, answer = rest.partition("#answer:")
        self.init = [ln.strip()[1:].strip() for ln in init.splitlines() if ln.strip().startswith("-")]
        self.conditions = [ln.strip()[1:].strip() for ln in cond.splitlines() if ln.strip().startswith("-")]
        self.answer = answer.strip()
        self.defaults = {m.group(1): m.group(2) for m in _PLACE.finditer(self.text)}

    def _default_env(self) -> dict:
        env = {}
        for k, v in self.defaults.items():
            s = v.replace(",", "")
            try:
                env[k] = int(s)
            except ValueError:
                try:
                    env[k] = float(s)
                except ValueError:
                    try:
                        env[k] = float(Fraction(s))
                    except (ValueError, ZeroDivisionError):
                        env[k] = v
        return env

    def check(self, gold: str) -> bool:
        """The answer expression at the template's default values reproduces the GSM8K answer."""
        try:
            val = _eval(self.answer, {**_env(random.Random(0)), **self._default_env()})
            return abs(float(val) - float(gold.replace(",", ""))) < 1e-6
        except Exception:  # noqa: BLE001 - any failure means the template cannot be used
            return False

    def draw(self, rng: random.Random, tries: int = 2000) -> dict | None:
        base = _env(rng)
        domains: dict[int, object] = {}  # init lines without randomness (range(...)) evaluated once
        for _ in range(tries):
            env = dict(base)
            try:
                for k, line in enumerate(self.init):
                    lhs, _, rhs = line.partition("=")
                    names = [n.strip().lstrip("$") for n in lhs.split(",")]
                    rhs = rhs.strip()
                    if k in domains:
                        val = domains[k]
                    else:
                        val = _eval(rhs, env)
                        if re.fullmatch(r"(range|frange|list|np\.arange|fix_floats|numbers_within)\([\d\s.,()a-z_]*\)", rhs) \
                                and "sample" not in rhs and "shuffle" not in rhs:
                            domains[k] = val
                    if len(names) == 1:
                        if isinstance(val, (list, tuple)):
                            val = rng.choice(list(val))
                        env[names[0]] = val
                    else:
                        for n, v in zip(names, val):
                            env[n] = v
                if all(_eval(c, env) for c in self.conditions):
                    ans = _eval(self.answer, env)
                    break
            except NameError:
                return None  # refers to a list or helper we do not know: no draw will ever work
            except Exception:  # noqa: BLE001 - a draw that fails a helper is just rejected
                continue
        else:
            return None
        if isinstance(ans, float) and not float(ans).is_integer():
            ans_text = f"{ans:.2f}".rstrip("0").rstrip(".")
        else:
            ans_text = str(int(round(float(ans))))
        question = _PLACE.sub(lambda m: _fmt(env.get(m.group(1), m.group(2))), self.text)
        return {"question": question, "answer": f"#### {ans_text}", "target": ans_text}


def _fmt(v) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.2f}".rstrip("0").rstrip(".")
    return str(v)


def load_templates(data_dir: Path | str, gsm_test: list[Doc]) -> tuple[dict[int, Template], dict]:
    """Usable templates by GSM8K test index, and counts of those skipped (and why)."""
    root = Path(data_dir) / "gsm_symbolic" / "templates" / "symbolic"
    stats = {"templates": 0, "usable": 0, "skipped_check": 0, "skipped_draw": 0}
    out: dict[int, Template] = {}
    if not root.is_dir():
        return out, stats
    for f in sorted(root.glob("*.json")):
        stats["templates"] += 1
        t = Template(json.loads(f.read_text()))
        gold = gsm_test[t.id_orig]["answer"].split("####")[-1].strip() if t.id_orig < len(gsm_test) else None
        if gold is None or gsm_test[t.id_orig]["question"].strip() != t.data["question"].strip() or not t.check(gold):
            stats["skipped_check"] += 1
            continue
        if t.draw(random.Random(0), tries=400) is None:  # an unknown list, or conditions that rarely hold
            stats["skipped_draw"] += 1
            continue
        out[t.id_orig] = t
        stats["usable"] += 1
    return out, stats


def symbolic_perturbation() -> Perturbation:
    """Applies to GSM8K docs carrying `_index` (their test-set position) and `_templates` (which its
    `prepare` step attaches)."""

    def apply(doc: Doc, rng: random.Random) -> Doc | None:
        t = (doc.get("_templates") or {}).get(doc.get("_index"))
        if t is None:
            return None
        v = t.draw(rng)
        if v is None:
            return None
        return {**doc, "question": v["question"], "answer": v["answer"]}

    def prepare(docs: list[Doc], all_docs: list[Doc], data_dir, seed: int) -> tuple[list[Doc], dict]:
        templates, stats = load_templates(data_dir, all_docs)
        stats = stats | {"items_with_template": sum(d["_index"] in templates for d in docs)}
        return [{**d, "_templates": templates} for d in docs], {"symbolic_templates": stats}

    return Perturbation("symbolic", "GSM-Symbolic template with new names and numbers", apply, applies_to="gsm8k",
                        randomised=True, content=True, matched=True, prepare=prepare)
