"""The task registry: every benchmark primer can run, by name, and their decontamination texts.

One small module per task family holds declarative `Task` entries (see `core.Task`); this module
collects them. Groups (mmlu, mmlu_cloze) name a list of subtasks and report micro/macro averages.

    get_task("arc_easy")            -> Task
    list_tasks()                    -> task and group names a user can pass to --tasks
    expand(["mmlu", "piqa"])        -> [Task, ...] with groups expanded
    iter_decontam_items(data_dir)   -> DecontamItem(task, benchmark, item_id, parts) for every evaluated document
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from primer.errors import PrimerError
from primer.eval.tasks import arc, code, commonsense, gsm8k, instruct, language, mmlu, reading
from primer.eval.tasks.core import Doc, Task

__all__ = ["Doc", "Task", "GROUPS", "get_task", "list_tasks", "expand", "iter_decontam_items", "DecontamItem", "decontam_tasks"]

_REGISTRY: dict[str, Task] = {}
for _mod in (commonsense, arc, reading, mmlu, language, gsm8k, code, instruct):
    for _t in _mod.TASKS:
        if _t.name in _REGISTRY:
            raise RuntimeError(f"duplicate task name {_t.name}")
        _REGISTRY[_t.name] = _t

GROUPS: dict[str, list[str]] = dict(mmlu.GROUPS)

# Tasks whose documents repeat another task's (same questions, other prompt): left out of the
# default decontamination set so each benchmark text is yielded once.
_DECONTAM_ALIASES = {"gsm8k_code", "squad_closedbook", "squad_openbook", "triviaqa_openbook"} | set(GROUPS["mmlu_cloze"])


def list_tasks(include_subtasks: bool = False) -> list[str]:
    """Names accepted by --tasks: tasks and groups (group members only when asked)."""
    members = {m for ms in GROUPS.values() for m in ms}
    names = [n for n in _REGISTRY if include_subtasks or n not in members]
    return sorted(names + list(GROUPS))


def get_task(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PrimerError(f"unknown task '{name}'; known tasks: {', '.join(list_tasks())}") from None


def expand(names: Iterable[str]) -> list[Task]:
    """Task entries for `names`, groups replaced by their members, order kept, no repeats."""
    out: list[Task] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        members = GROUPS.get(name, [name])
        for m in members:
            t = get_task(m)
            if t not in out:
                out.append(t)
    return out


class DecontamItem(NamedTuple):
    task: str
    benchmark: str
    """the task's group (mmlu) or its own name: the unit an n-gram size is chosen for"""
    item_id: str
    """the item's position in the task's evaluated split (0-based), as the loader orders it"""
    parts: tuple[str, ...]
    """`Task.decontam_parts`: the solved item first"""


def decontam_tasks() -> list[Task]:
    """Every task decontamination checks by default (prompt-only variants of the same documents left out)."""
    return [t for n, t in _REGISTRY.items() if n not in _DECONTAM_ALIASES]


def iter_decontam_items(
    data_dir: Path | str, tasks: Iterable[str] | None = None, *, missing: str = "skip"
) -> Iterator[DecontamItem]:
    """Every document of each task's evaluated split, as the parts decontamination looks for.

    `tasks` defaults to every task (without prompt-only variants of the same documents).
    Tasks whose files are absent from `data_dir` are skipped (missing="skip") or raise ("error").
    """
    for task in expand(tasks) if tasks is not None else decontam_tasks():
        try:
            docs = task.docs(data_dir)
        except PrimerError:
            if missing == "skip":
                continue
            raise
        for i, doc in enumerate(docs):
            parts = task.decontam_parts(doc)
            if parts:
                yield DecontamItem(task.name, task.group or task.name, str(i), parts)
