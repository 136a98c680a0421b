"""GSM8K with new numbers: rebuild each problem's computation from its calculator annotations.

GSM8K solutions carry calculator annotations (`48/2 = <<48/2=24>>24`). Read in order, they form
a small expression graph: every number literal in an annotation is either the result of an
earlier annotation, a number written in digits in the question (a *leaf* we may change), or a
constant (`/2` for "half", `*60` minutes, a number written as a word). The final answer
(`#### 72`) must be one of the nodes. With the graph we can draw new, plausible leaf values,
recompute every node exactly (fractions, no float drift), check the new problem still makes sense
(integers stay integers, nothing that was non-negative goes negative, magnitudes similar), and
write the question with the new numbers and its new answer.

Items are skipped (and counted by reason) when the graph cannot be rebuilt exactly: an
annotation that does not parse, intermediate results that were rounded, a final answer no node
reproduces, or no leaf we could change. `rebuild(item)` with the original numbers reproduces the
original answer exactly; that is the check the tests run on the whole test set.

Why the heuristics:
  * A literal equal to an earlier annotation's stated result links to the latest such node,
    because GSM8K solutions nearly always carry intermediate results forward.
  * Within one annotation a question number links at most as often as it is written in the
    question: in `2/2` for "2 bolts and half that much", the second 2 is the "half" constant.
  * A question number of 0 or 1 is never changed (it is too often a unit or an identity).
  * Numbers in clock times (3:30) or written fractions (1/2) are kept fixed.
"""

from __future__ import annotations

import ast
import math
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction

# A number in question text: digits with optional thousands commas and decimals, optional %.
_NUM = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)((?:st|nd|rd|th)\b)?")
_TIME = re.compile(r"\d{1,2}:\d{2}")
_FRACTION = re.compile(r"\b\d+/\d+\b")
_ANNOT = re.compile(r"<<([^<>]*?)=([^<>=]*)>>")
_FINAL = re.compile(r"####\s*(.+?)\s*$")

# Values a question can imply without writing the digits: number words and unit conversions.
# A question number whose value is also implied this way is ambiguous in the annotations
# ("two 2-hour classes" -> 2*2), so it is kept fixed.
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen twenty").split()
_IMPLIED: dict[str, tuple[int, ...]] = {
    **{w: (i,) for i, w in enumerate(_WORDS)},
    "thirty": (30,), "forty": (40,), "fifty": (50,), "hundred": (100,), "thousand": (1000,),
    "half": (2,), "halves": (2,), "twice": (2,), "double": (2,), "doubles": (2,), "pair": (2,),
    "pairs": (2,), "couple": (2,), "both": (2,), "triple": (3,), "thrice": (3,), "third": (3,),
    "quarter": (4,), "quarters": (4,), "dozen": (12,), "dozens": (12,), "hour": (60, 24), "hours": (60, 24),
    "minute": (60,), "minutes": (60,), "seconds": (60,), "week": (7,), "weeks": (7, 52), "day": (24, 7),
    "days": (24, 7, 30, 365), "month": (12, 30), "months": (12, 30), "year": (12, 52, 365),
    "years": (12, 52, 365), "percent": (100,), "cent": (100,), "cents": (100,), "dollar": (100,),
    "foot": (12,), "feet": (12,), "inch": (12,), "inches": (12,), "yard": (3,), "yards": (3,),
    "century": (100,), "decade": (10,), "score": (20,), "gallon": (4, 128), "quart": (4,),
    "pound": (16,), "pounds": (16,), "ounces": (16,), "meter": (100,), "meters": (100,), "kilometer": (1000,),
}


def implied_values(question: str) -> set[Fraction]:
    """Values the question implies through words (e.g. 'two', 'half', 'hours' -> 60)."""
    out: set[Fraction] = set()
    for w in re.findall(r"[a-z]+", question.lower()):
        out.update(Fraction(v) for v in _IMPLIED.get(w, ()))
    return out


class RebuildError(ValueError):
    """The item's computation cannot be rebuilt exactly; `reason` is a short tag for counting."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def parse_number(text: str) -> Fraction:
    """'1,200' -> 1200, '2.50' -> 5/2, '-3' -> -3 (exact)."""
    return Fraction(text.replace(",", "").replace("$", "").strip())


@dataclass
class QNumber:
    """One number written in digits in the question."""

    start: int
    end: int
    text: str
    value: Fraction
    decimals: int
    percent: bool
    commas: bool
    fixed: bool
    ordinal: bool = False


@dataclass
class Node:
    """One annotation: its expression (with literals replaced by references) and its result."""

    expr: ast.Expression
    refs: dict[str, tuple[str, object]]  # name -> ("node", idx) | ("leaf", qnum value) | ("const", Fraction)
    stated: Fraction
    span: tuple[int, int]  # span of the annotation in the answer text


@dataclass
class Rebuilt:
    """A GSM8K item whose computation was rebuilt: leaves, nodes, and which node is the answer."""

    question: str
    answer: str
    qnums: list[QNumber]
    leaves: dict[Fraction, list[int]]  # leaf value -> indices into qnums written with that value
    variable: list[Fraction]  # leaf values we may change
    nodes: list[Node]
    final: int  # index of the node that is the final answer
    final_value: Fraction
    values: list[Fraction] = field(default_factory=list)  # recomputed node values, original numbers


def question_numbers(question: str) -> list[QNumber]:
    fixed_spans = [m.span() for m in _TIME.finditer(question)] + [m.span() for m in _FRACTION.finditer(question)]
    out = []
    for m in _NUM.finditer(question):
        s, e = m.span()
        inside_fixed = any(a <= s < b for a, b in fixed_spans)
        ipart, dec, pct = m.group(1), m.group(2) or "", m.group(3)
        value = parse_number(ipart + dec)
        out.append(
            QNumber(s, e, m.group(0), value, len(dec) - 1 if dec else 0, bool(pct), "," in ipart,
                    fixed=inside_fixed or value <= 1, ordinal=bool(m.group(4)))
        )
    return out


def _literals(expr: str) -> tuple[ast.Expression, str]:
    """Parse an annotation's left side; returns the tree and the cleaned source it came from."""
    # GSM8K annotations are arithmetic over decimal literals; a trailing % means /100.
    clean = re.sub(r"(?<=\d),(?=\d{3})", "", expr).replace("x", "*").replace("^", "**")
    clean = re.sub(r"(\d+(?:\.\d+)?|\.\d+)%", r"(\1/100)", clean).strip()
    try:
        tree = ast.parse(clean.strip(), mode="eval")
    except SyntaxError as e:
        raise RebuildError("unparsable", expr) from e
    for n in ast.walk(tree):
        if not isinstance(n, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator,
                              ast.unaryop, ast.Name, ast.Load)):
            raise RebuildError("unparsable", expr)
        if isinstance(n, ast.Constant) and not isinstance(n.value, (int, float)):
            raise RebuildError("unparsable", expr)
    return tree, clean


def _const_text(node: ast.Constant, src: str) -> Fraction:
    seg = ast.get_source_segment(src, node)
    return Fraction(seg) if seg is not None else Fraction(str(node.value))


def evaluate(expr: ast.Expression, env: dict[str, Fraction]) -> Fraction:
    """Exact value of an annotation expression whose literals are names bound in `env`."""

    def ev(n: ast.AST) -> Fraction:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Name):
            return env[n.id]
        if isinstance(n, ast.Constant):
            return Fraction(str(n.value))
        if isinstance(n, ast.UnaryOp):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            op = n.op
            if isinstance(op, ast.Add):
                return a + b
            if isinstance(op, ast.Sub):
                return a - b
            if isinstance(op, ast.Mult):
                return a * b
            if isinstance(op, (ast.Div, ast.FloorDiv)):
                if b == 0:
                    raise ZeroDivisionError
                return a / b if isinstance(op, ast.Div) else Fraction(a // b)
            if isinstance(op, ast.Mod):
                if b == 0:
                    raise ZeroDivisionError
                return a % b
            if isinstance(op, ast.Pow):
                if b.denominator != 1 or abs(b) > 12:
                    raise ValueError("pow")
                return a ** int(b)
        raise ValueError(f"unsupported {type(n).__name__}")

    return ev(expr)


class _Namer(ast.NodeTransformer):
    """Replace every numeric literal by a fresh name, remembering its exact written value."""

    def __init__(self, src: str):
        self.src = src
        self.found: list[tuple[str, Fraction]] = []

    def visit_Constant(self, node: ast.Constant):
        name = f"v{len(self.found)}"
        self.found.append((name, _const_text(node, self.src)))
        return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)


def rebuild(item: dict) -> Rebuilt:
    """Rebuild one GSM8K record ({'question', 'answer'}) or raise RebuildError with a reason."""
    question, answer = item["question"], item["answer"]
    m = _FINAL.search(answer.strip().splitlines()[-1])
    if not m:
        raise RebuildError("no_final_answer")
    try:
        final_value = parse_number(m.group(1))
    except (ValueError, ZeroDivisionError) as e:
        raise RebuildError("no_final_answer", m.group(1)) from e
    qnums = question_numbers(question)
    # written value -> [(question number index, scale)]; "20%" may be used as 20 or as 0.2.
    by_value: dict[Fraction, list[tuple[int, Fraction]]] = {}
    for i, q in enumerate(qnums):
        by_value.setdefault(q.value, []).append((i, Fraction(1)))
        if q.percent:
            by_value.setdefault(q.value / 100, []).append((i, Fraction(1, 100)))
    nodes: list[Node] = []
    stated_to_node: dict[Fraction, int] = {}
    leaves: dict[Fraction, list[int]] = {}
    # A literal equal to both an earlier result and a question number is read as the question
    # number if that number was not used yet (every number in a GSM8K question is normally used),
    # else as the earlier result.
    used_leaves: set[Fraction] = set()
    for am in _ANNOT.finditer(answer):
        lhs, rhs = am.group(1), am.group(2)
        try:
            stated = parse_number(rhs)
        except (ValueError, ZeroDivisionError) as e:
            raise RebuildError("unparsable", rhs) from e
        tree, src = _literals(lhs)
        namer = _Namer(src)
        tree = ast.fix_missing_locations(namer.visit(tree))
        refs: dict[str, tuple[str, object]] = {}
        used_here_leaves: set[Fraction] = set()
        used_here: dict[Fraction, int] = {}
        for name, v in namer.found:
            as_leaf = v in by_value and used_here.get(v, 0) < len(by_value[v])
            if v in stated_to_node and not (as_leaf and qnums[by_value[v][0][0]].value not in used_leaves):
                refs[name] = ("node", stated_to_node[v])
            elif as_leaf:
                used_here[v] = used_here.get(v, 0) + 1
                j, scale = by_value[v][0]
                base = qnums[j].value
                refs[name] = ("leaf", (base, scale))
                leaves.setdefault(base, sorted({j for j in range(len(qnums)) if qnums[j].value == base}))
                used_here_leaves.add(base)
            else:
                refs[name] = ("const", v)
        used_leaves |= used_here_leaves
        nodes.append(Node(tree, refs, stated, am.span()))
        stated_to_node[stated] = len(nodes) - 1
    if not nodes:
        raise RebuildError("no_annotations")
    values = _compute(nodes, {})
    for node, v in zip(nodes, values):
        if v != node.stated:
            raise RebuildError("rounded_or_inconsistent", f"{v} != {node.stated}")
    finals = [i for i, v in enumerate(values) if v == final_value]
    if not finals:
        raise RebuildError("final_not_computed")
    final = finals[-1]
    reach = _leaves_under(nodes, final)
    implied = implied_values(question)
    # Steps done in prose without an annotation ("adds .20*20 = $4.00") break the graph: a later
    # annotation then uses their result as a constant, which would not follow new numbers.
    prose = re.sub(r"<<[^<>]*>>\s*\$?\s*\d[\d,]*(?:\.\d+)?", " ", answer)
    prose_results = {parse_number(x) for x in re.findall(r"=\s*\$?\s*(\d[\d,]*(?:\.\d+)?)", prose)}
    for i in _nodes_under(nodes, final):
        for kind, ref in nodes[i].refs.values():
            if kind == "const" and ref in prose_results and ref not in implied:
                raise RebuildError("unannotated_step", str(ref))
    # A question number the annotations never use but the prose does ("the lowest score, 71")
    # was used in a way the graph cannot see (a comparison, a choice).
    used = {q.value for q in qnums if q.value in leaves}
    prose_nums = {parse_number(x) for x in re.findall(r"(?<![\d.,])\d[\d,]*(?:\.\d+)?", prose.split("####")[0])}
    for q in qnums:
        if not q.fixed and q.value not in used and q.value not in implied and q.value in prose_nums:
            if not any(q.value == n.stated for n in nodes):
                raise RebuildError("unannotated_use", q.text)
    variable = sorted(
        v for v in reach if v not in implied and not any(qnums[j].fixed for j in leaves[v])
    )
    if not variable:
        raise RebuildError("no_variable_leaf")
    return Rebuilt(question, answer, qnums, leaves, variable, nodes, final, final_value, values)


def _operands(node: Node, values: list[Fraction], new_leaf: dict[Fraction, Fraction]) -> dict[str, Fraction]:
    """The values of a node's operands: earlier results, substituted question numbers, constants."""
    out: dict[str, Fraction] = {}
    for name, (kind, ref) in node.refs.items():
        if kind == "node":
            out[name] = values[ref]  # type: ignore[index]
        elif kind == "leaf":
            base, scale = ref  # type: ignore[misc]
            out[name] = new_leaf.get(base, base) * scale
        else:
            out[name] = ref  # type: ignore[assignment]
    return out


def _compute(nodes: list[Node], new_leaf: dict[Fraction, Fraction]) -> list[Fraction]:
    values: list[Fraction] = []
    for node in nodes:
        values.append(evaluate(node.expr, _operands(node, values, new_leaf)))
    return values


def _nodes_under(nodes: list[Node], idx: int) -> set[int]:
    seen, stack = set(), [idx]
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        stack.extend(ref for kind, ref in nodes[i].refs.values() if kind == "node")  # type: ignore[misc]
    return seen


def _leaves_under(nodes: list[Node], idx: int) -> set[Fraction]:
    return {ref[0] for i in _nodes_under(nodes, idx)  # type: ignore[index]
            for kind, ref in nodes[i].refs.values() if kind == "leaf"}


def _draw(value: Fraction, percent: bool, rng: random.Random) -> Fraction:
    """A new plausible value near `value`: same kind (integer/decimal), similar magnitude, same roundness."""
    if value.denominator != 1:
        # Keep the granularity of a decimal (0.25 stays on quarters, 1.5 on halves) and keep it
        # a non-integer, so "$1.5" never becomes "$2.0".
        den = value.denominator
        lo, hi = max(1, math.floor(value * den / 2)), math.ceil(value * den * 3 / 2) + 1
        for _ in range(20):
            k = rng.randint(lo, hi)
            if k % den:
                return Fraction(k, den)
        return value
    v = int(value)
    if percent:
        step = 10 if v % 10 == 0 else (5 if v % 5 == 0 else 1)
        return Fraction(step * rng.randint(max(1, 10 // step), (90 if v <= 90 else 200) // step))
    step = 1
    for s in (1000, 100, 50, 10, 5):
        if v % s == 0 and v // s >= 2:
            step = s
            break
    if v <= 12:
        lo, hi = 2, max(v + 3, 9)
    else:
        lo, hi = max(2, v // 2), v * 3 // 2 + step
    return Fraction(step * rng.randint(-(-lo // step), hi // step))


def _plausible(old: list[Fraction], new: list[Fraction], final: int) -> bool:
    for a, b in zip(old, new):
        if a.denominator == 1 and b.denominator != 1:
            return False
        if a.denominator != 1 and (b * 100).denominator != 1:
            return False  # keep money-like decimals to cents
        if a >= 0 and b < 0:
            return False
        if a > 0 and b == 0:
            return False
    a, b = old[final], new[final]
    if a != 0 and not (abs(a) / 20 <= abs(b) <= abs(a) * 20):
        return False
    return True


def format_like(q: QNumber, v: Fraction) -> str:
    """Write `v` the way the original number was written (commas, decimals, %)."""
    if q.decimals:
        s = f"{float(v):.{q.decimals}f}"
    elif v.denominator == 1:
        s = f"{int(v):,}" if q.commas else str(int(v))
    else:
        s = f"{float(v):g}"
    if q.ordinal and v.denominator == 1:
        n = int(v)
        s += "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return s + ("%" if q.percent else "")


def format_answer(v: Fraction) -> str:
    if v.denominator == 1:
        return str(int(v))
    return f"{float(v):.10g}"


def substitute(rb: Rebuilt, rng: random.Random, tries: int = 200) -> dict | None:
    """New numbers for the variable leaves; returns a GSM8K-style record or None if none was plausible."""
    for _ in range(tries):
        new_leaf = {}
        for v in rb.variable:
            pct = any(rb.qnums[j].percent for j in rb.leaves[v])
            new_leaf[v] = _draw(v, pct, rng)
        if all(new_leaf[v] == v for v in rb.variable):
            continue
        # Two different leaves may not collapse onto one value nor onto an unchanged leaf's value
        # (the text would become ambiguous for the next rebuild and for readers).
        written = [new_leaf.get(q.value, q.value) for q in rb.qnums]
        if len(set(new_leaf.values())) < len(new_leaf):
            continue
        fixed_vals = {q.value for q in rb.qnums if q.value not in new_leaf}
        if fixed_vals & set(new_leaf.values()):
            continue
        try:
            values = _compute(rb.nodes, new_leaf)
        except (ZeroDivisionError, ValueError, OverflowError):
            continue
        if not _plausible(rb.values, values, rb.final):
            continue
        return {
            "question": _rewrite_question(rb, written),
            "answer": _rewrite_answer(rb, new_leaf, values),
            "target": format_answer(values[rb.final]),
            "substitution": {format_answer(k): format_answer(v) for k, v in new_leaf.items()},
        }
    return None


def _rewrite_question(rb: Rebuilt, written: list[Fraction]) -> str:
    out, last = [], 0
    for q, v in zip(rb.qnums, written):
        out.append(rb.question[last : q.start])
        out.append(format_like(q, v) if v != q.value else q.text)
        last = q.end
    out.append(rb.question[last:])
    return "".join(out)


def _rewrite_answer(rb: Rebuilt, new_leaf: dict[Fraction, Fraction], values: list[Fraction]) -> str:
    """Best-effort new worked solution; only its final `#### N` is used for scoring.

    Each annotation is re-rendered from its new literal values. The prose before annotation i
    (e.g. "3 * 30 = ") is mapped with that annotation's own literals first, and the number right
    after annotation i-1 is its result; anything else falls back to a global value map.
    """
    glob: dict[Fraction, Fraction] = {}
    clash: set[Fraction] = set()
    for a, b in list(new_leaf.items()) + [(n.stated, v) for n, v in zip(rb.nodes, values)]:
        if a in glob and glob[a] != b:
            clash.add(a)
        glob[a] = b

    num = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\d.,])\d+(?:\.\d+)?|(?<![\w\d])\.\d+")

    def map_segment(text: str, local: dict[Fraction, Fraction], first: tuple[Fraction, Fraction] | None) -> str:
        pos = [0]

        def repl(m: re.Match) -> str:
            try:
                v = parse_number(m.group(0))
            except (ValueError, ZeroDivisionError):
                return m.group(0)
            if first is not None and m.start() == 0 and v == first[0]:
                nv = first[1]
            elif v in local:
                nv = local[v]
            elif v in glob and v not in clash:
                nv = glob[v]
            else:
                return m.group(0)
            pos[0] += 1
            return f"{int(nv):,}" if ("," in m.group(0) and nv.denominator == 1) else format_answer(nv)

        return num.sub(repl, text)

    body = rb.answer.rstrip()
    body = body[: body.rfind("####")].rstrip()
    out, last, prev = [], 0, None
    for i, node in enumerate(rb.nodes):
        s, e = node.span
        olds = dict(_old_literals(node, rb.nodes))
        news = _operands(node, values, new_leaf)
        local: dict[Fraction, Fraction] = {}
        for name, ov in olds.items():
            local.setdefault(ov, news[name])
        local.setdefault(node.stated, values[i])
        out.append(map_segment(body[last:s], local, prev))
        out.append(f"<<{_render(node.expr, news)}={format_answer(values[i])}>>")
        last, prev = e, (node.stated, values[i])
    out.append(map_segment(body[last:], {}, prev))
    return "".join(out) + f"\n#### {format_answer(values[rb.final])}"


def _old_literals(node: Node, nodes: list[Node]) -> list[tuple[str, Fraction]]:
    out = []
    for name, (kind, ref) in node.refs.items():
        if kind == "node":
            out.append((name, nodes[ref].stated))  # type: ignore[index]
        elif kind == "const":
            out.append((name, ref))
        elif kind == "leaf":
            base, scale = ref  # type: ignore[misc]
            out.append((name, base * scale))
    return out


def _render(expr: ast.Expression, env: dict[str, Fraction]) -> str:
    """Annotation text with names replaced by numbers (GSM8K style: no spaces)."""

    class Sub(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name):
            v = env[n.id]
            return ast.Constant(int(v) if v.denominator == 1 else float(v))

    text = ast.unparse(Sub().visit(ast.parse(ast.unparse(expr), mode="eval")))
    return text.replace(" ", "")


@dataclass
class Coverage:
    total: int = 0
    rebuilt: int = 0
    substituted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"total": self.total, "rebuilt": self.rebuilt, "substituted": self.substituted,
                "coverage": self.substituted / self.total if self.total else 0.0, "skipped": dict(self.skipped)}


def number_variants(items: list[dict], n_variants: int = 1, seed: int = 0) -> tuple[list[list[dict]], Coverage]:
    """For each item, up to `n_variants` rebuilt copies with new numbers ([] where it was skipped)."""
    rng = random.Random(seed)
    cov = Coverage(total=len(items))
    out: list[list[dict]] = []
    for item in items:
        try:
            rb = rebuild(item)
        except RebuildError as e:
            cov.skipped[e.reason] = cov.skipped.get(e.reason, 0) + 1
            out.append([])
            continue
        cov.rebuilt += 1
        variants, seen = [], set()
        for _ in range(n_variants):
            v = substitute(rb, rng)
            if v is not None and v["question"] not in seen:
                seen.add(v["question"])
                variants.append(v)
        if variants:
            cov.substituted += 1
        else:
            cov.skipped["no_plausible_numbers"] = cov.skipped.get("no_plausible_numbers", 0) + 1
        out.append(variants)
    return out, cov
