"""Check the synth formats that carry an answer before a document is kept.

Two checks, named by a format's "check" key in `grid.FORMATS`:
  * "tests" (code exercises): the completion holds the reference solution (a function) and its tests
    (assert statements that call it) in ```python blocks; the blocks run in order in the sandbox, then
    any pytest-style `test_*()` functions, and the document is kept only when the solution passes its
    own tests and at least one assert ran (asserts are counted as they run: tests inside a function
    nobody calls prove nothing).
  * "answer" (math word problems): the worked solution ends with a line "Answer: <number>" and the
    completion holds a Python `solution()` that computes it (PAL, Gao et al. 2022: the teacher's
    program is the check on its prose); `solution()` runs in the sandbox and must return that number
    (within 1e-4 relative, as gsm8k_code scores; a stated answer with d decimals also matches a
    value that rounds to it).
A document gets `verification = {"check": "tests"|"answer", "status": STATUS, "reason": str|None}`,
STATUS one of verified, failed (wrong answer, failing test, crash, a python block that does not parse),
timeout, unverifiable (no parseable answer, tests or program; a block cut off at max_tokens). Only "verified" is kept; the others go to rejects.jsonl under
`REJECT_REASON[status]`, with the verification record saying why.

`Verifier` runs the programs on a small thread pool of sandboxed processes while the teacher keeps
generating: `submit()` returns at once, `ready()` hands back the finished verdicts.
"""

from __future__ import annotations

import ast
import re
from concurrent.futures import Future, ThreadPoolExecutor

from primer.sandbox import Result, allow_unsafe, isolation_mode, run_python
from primer.synth import grid

STATUSES = ("verified", "failed", "timeout", "unverifiable")
REJECT_REASON = {"failed": "verify_failed", "timeout": "verify_timeout", "unverifiable": "unverifiable"}
"""verification status -> the reject reason counted in the summary"""

PYTHON_TAGS = {"", "python", "python3", "py"}
"""fenced blocks with these tags are code we run (an unclosed one, cut at max_tokens, is not)"""
_ANSWER = re.compile(r"^[\W_]*(?:final\s+)?answer\s*(?:is)?\s*[:=]\s*\**\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.I | re.M)
_VALUE_TAG = "__primer_answer__"
_RAN = "__primer_asserts_ran__"


def check_of(fmt: str) -> str | None:
    """The check a format's documents get ("tests", "answer") or None (nothing to check)."""
    spec = grid.FORMATS.get(fmt)
    return spec.get("check") if spec else None


def verdict(check: str, status: str, reason: str | None = None) -> dict:
    return {"check": check, "status": status, "reason": reason}


def split_fences(text: str) -> tuple[str, list[tuple[str, str]], bool]:
    """(the prose outside fenced blocks, the closed python-tagged or untagged blocks in order as (tag, code),
    whether a python block was left open: cut at max_tokens)."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    lang, body = None, []  # lang is None outside a block
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if lang is None:
                lang, body = stripped[3:].strip().lower(), []
            else:
                if lang in PYTHON_TAGS:
                    blocks.append((lang, "\n".join(body) + "\n"))
                lang = None
        elif lang is None:
            prose.append(line)
        else:
            body.append(line)
    return "\n".join(prose), blocks, lang in PYTHON_TAGS


Problem = tuple[str, str]
"""(status, reason) of a completion that cannot be run"""


CUT = "a ```python block is cut off (max_tokens)"


def _blocks(text: str) -> tuple[list[str], Problem | None, bool]:
    """(the fenced code blocks that parse as Python, in order; None, or the status and reason when there are
    none: a python-tagged block that does not parse is the teacher's broken code, 'failed'; no block, or one
    cut at max_tokens, leaves nothing to run, 'unverifiable'). Untagged blocks that do not parse are skipped:
    they may be output or prose. The last item: whether a python block was cut off."""
    out, broken = [], None
    _, blocks, cut = split_fences(text)
    for tag, b in blocks:
        try:
            ast.parse(b)
        except (SyntaxError, ValueError) as e:
            if tag and broken is None:
                broken = f"SyntaxError in a ```python block: {getattr(e, 'msg', e)} (line {getattr(e, 'lineno', '?')})"
            continue
        out.append(b)
    if broken:
        return [], ("failed", broken), cut
    if out:
        return out, None, cut
    return [], ("unverifiable", CUT if cut else "no ```python block"), cut


def _defined(tree: ast.AST) -> set[str]:
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _asserts_calling(tree: ast.AST, names: set[str]) -> int:
    """assert statements whose test calls one of `names` (an `assert True` tests nothing)."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and any(
                isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in names
                for c in ast.walk(node.test)):
            count += 1
    return count


class _CountAsserts(ast.NodeTransformer):
    """After each assert, one more in the builtins counter (a name every scope of the program sees)."""

    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        count = ast.parse(f"{_RAN}[0] += 1").body[0]
        return [node, ast.copy_location(count, node)]


def tests_program(text: str) -> tuple[str | None, Problem | None]:
    """(program, None) for a code exercise: its python blocks in order, its asserts counted, its
    test_*() functions called; or (None, why it cannot run)."""
    blocks, why, cut = _blocks(text)
    if not blocks:
        return None, why
    tree = ast.parse("\n\n".join(blocks))
    names = _defined(tree)
    if not names:
        return None, ("unverifiable", "no function defined")
    if not _asserts_calling(tree, names):
        return None, ("unverifiable", CUT if cut else "no assert that calls the solution's function")
    tests = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")
             and not n.args.args and not n.args.posonlyargs]
    body = ast.unparse(ast.fix_missing_locations(_CountAsserts().visit(tree)))
    program = (f"import builtins\nbuiltins.{_RAN} = [0]\n\n{body}\n\n"
               + "".join(f"{t}()\n" for t in tests) + f"print()\nprint({_RAN!r}, {_RAN}[0])\n")
    return program, None


def stated_answer(text: str) -> str | None:
    """The number on the last "Answer: N" line outside code blocks, as written ("1,250.50" -> "1250.50")."""
    found = _ANSWER.findall(split_fences(text)[0])
    return found[-1].replace(",", "") if found else None


def answer_program(text: str) -> tuple[str | None, str | None, Problem | None]:
    """(program, stated answer, None) for a word problem, or (None, None, why it cannot run)."""
    answer = stated_answer(text)
    if answer is None:
        return None, None, ("unverifiable", "no 'Answer: <number>' line")
    blocks, why, cut = _blocks(text)
    block = next((b for b in blocks if "solution" in _defined(ast.parse(b))), None)
    if block is None:
        return None, None, why or ("unverifiable", CUT if cut else "no solution() function in a ```python block")
    program = f"{block}\n\nprint()\nprint({_VALUE_TAG!r}, repr(solution()))\n"
    return program, answer, None


def matches(value: float, answer: str) -> bool:
    gold = float(answer)
    if abs(value - gold) <= 1e-4 * max(1.0, abs(gold)):
        return True
    decimals = len(answer.split(".")[1]) if "." in answer else 0
    return decimals > 0 and round(value, decimals) == gold


def _reason(res: Result) -> str:
    lines = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])
    return lines[-1][:300]


def judge_tests(res: Result) -> dict:
    if res.status == "timeout":
        return verdict("tests", "timeout", f"tests still running after {res.seconds:.1f} s")
    if not res.passed:
        return verdict("tests", "failed", _reason(res))
    ran = next((ln.split()[-1] for ln in reversed(res.stdout.splitlines()) if ln.startswith(_RAN)), "0")
    if ran == "0":
        return verdict("tests", "unverifiable", "no assert ran (tests inside a function that is never called)")
    return verdict("tests", "verified")


def judge_answer(res: Result, answer: str) -> dict:
    if res.status == "timeout":
        return verdict("answer", "timeout", f"solution() still running after {res.seconds:.1f} s")
    if not res.passed:
        return verdict("answer", "failed", _reason(res))
    line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith(_VALUE_TAG)), None)
    shown = line[len(_VALUE_TAG):].strip() if line else "nothing"
    try:
        value = float(ast.literal_eval(shown))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return verdict("answer", "failed", f"solution() returned {shown[:80]}, not a number")
    if matches(value, answer):
        return verdict("answer", "verified")
    return verdict("answer", "failed", f"solution() returned {value:g}; the text says {answer}")


class Verifier:
    """Sandboxed checks on a thread pool, beside the teacher. Construct it before loading the teacher:
    it fails at once (a PrimerError saying what to install) when this machine has no isolation and
    `unsafe` is off."""

    def __init__(self, timeout: float = 5.0, workers: int = 2, unsafe: bool = False) -> None:
        with allow_unsafe(unsafe):
            self.isolation = isolation_mode()
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="verify")
        self.pending: list[tuple[object, Future | dict]] = []

    def submit(self, key: object, fmt: str, text: str) -> None:
        """Queue the check of one completion of format `fmt` (one with `check_of(fmt)`)."""
        check = check_of(fmt)
        if check == "tests":
            program, why = tests_program(text)
            answer = None
        elif check == "answer":
            program, answer, why = answer_program(text)
        else:
            raise ValueError(f"format {fmt!r} has no check")
        if program is None:
            self.pending.append((key, verdict(check, *why)))
            return
        fut = self.pool.submit(run_python, program, timeout=self.timeout, isolation=self.isolation)
        self.pending.append((key, _Judged(fut, answer)))

    def ready(self, wait: bool = False) -> list[tuple[object, dict]]:
        """(key, verification) for every finished check, in submission order; `wait`: all of them."""
        done, still = [], []
        for key, item in self.pending:
            if isinstance(item, dict):
                done.append((key, item))
            elif wait or item.done():
                done.append((key, item.verdict()))
            else:
                still.append((key, item))
        self.pending = still
        return done

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Judged:
    def __init__(self, fut: Future, answer: str | None) -> None:
        self.fut, self.answer = fut, answer

    def done(self) -> bool:
        return self.fut.done()

    def verdict(self) -> dict:
        res = self.fut.result()
        return judge_tests(res) if self.answer is None else judge_answer(res, self.answer)
