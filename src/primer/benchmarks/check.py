"""`primer data check DIR`: is this folder benchmark data primer can trust? One message per problem.

Two passes over a folder laid out like shared/benchmarks (or over one of its subfolders):

1. Each subfolder's MANIFEST.md: every file it lists exists with the listed size, sha256 and record
   count (in the listed unit), every record has the listed fields, and no data file is unlisted.
2. Every `primer eval` task whose files are there loads through its own loader (strictly: a
   malformed line names its file and line) and every document yields its prompt, choices and target.
   A task with some of its files but not all is a problem; one with none is simply not present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from primer.benchmarks import manifest as MF
from primer.common.files import sha256_file
from primer.errors import PrimerError

NOT_DATA = {MF.MANIFEST, "README.md", ".lock"}


@dataclass
class CheckResult:
    root: str
    folders: int = 0
    files: int = 0
    records: int = 0
    tasks: list[str] = field(default_factory=list)
    """tasks that loaded"""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _data_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.name not in NOT_DATA and not p.name.startswith(("LICENSE", "NOTICE", "."))
                  and not p.name.endswith(".tmp"))


def check_folder(folder: Path, res: CheckResult, label: str) -> None:
    if not (folder / MF.MANIFEST).is_file():
        res.problems.append(f"{label}: no {MF.MANIFEST} (it lists each file with its records, bytes and sha256)")
        return
    try:
        man = MF.read(folder)
    except (OSError, UnicodeDecodeError) as e:
        res.problems.append(f"{label}/{MF.MANIFEST}: unreadable ({e})")
        return
    if not man.files:
        res.problems.append(f"{label}/{MF.MANIFEST}: no files table (| file | records | unit | bytes | sha256 |)")
        return
    res.folders += 1
    listed = {f.path for f in man.files}
    for f in man.files:
        where = f"{label}/{f.path}"
        p = folder / f.path
        if not p.is_file():
            res.problems.append(f"{where}: listed in {MF.MANIFEST} but missing")
            continue
        res.files += 1
        size = p.stat().st_size
        if size != f.bytes:
            res.problems.append(f"{where}: {size} bytes, {MF.MANIFEST} says {f.bytes} (changed or truncated)")
        elif (digest := sha256_file(p)) != f.sha256:
            res.problems.append(f"{where}: sha256 {digest[:12]}..., {MF.MANIFEST} says {f.sha256[:12]}... (content changed)")
        try:
            n = MF.count_records(p, f.unit)
        except ValueError as e:
            res.problems.append(f"{where}: {e}")
            continue
        except (KeyError, TypeError, UnicodeDecodeError) as e:
            res.problems.append(f"{where}: not readable as {f.unit} ({type(e).__name__}: {e})")
            continue
        res.records += n
        if n != f.records:
            res.problems.append(f"{where}: {n} records, {MF.MANIFEST} says {f.records}")
        for problem in MF.schema_problems(p, f.unit, _fields_for(man, f.path)):
            res.problems.append(f"{where}: {problem}")
    for rel in _data_files(folder):
        if rel not in listed:
            res.problems.append(f"{label}/{rel}: not listed in {MF.MANIFEST}")


def _fields_for(man: MF.Manifest, rel: str) -> list[str]:
    if rel in man.fields:
        return man.fields[rel][0]
    for name, (names, alike) in man.fields.items():
        if alike and Path(name).parent == Path(rel).parent and Path(name).suffix == Path(rel).suffix:
            return names
    return []


def check_tasks(root: Path, res: CheckResult) -> None:
    from primer.eval.tasks import GROUPS, expand, list_tasks  # noqa: PLC0415

    for task in expand(n for n in list_tasks(include_subtasks=True) if n not in GROUPS):
        present = [rel for rel in task.files if (root / rel).is_file()]
        if not present:
            continue
        if len(present) < len(task.files):
            missing = sorted(set(task.files) - set(present))
            res.problems.append(f"task {task.name}: {', '.join(missing)} missing (it reads {', '.join(task.files)})")
            continue
        try:
            docs = task.docs(root)
            for i, d in enumerate(docs):
                try:
                    task.doc_to_text(d), task.doc_to_target(d)
                    if task.doc_to_choice is not None:
                        task.doc_to_choice(d)
                except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
                    raise PrimerError(f"document {i} ({task.files[0]}): {type(e).__name__}: {e}") from None
        except PrimerError as e:
            res.problems.append(f"task {task.name}: {e}")
        except (KeyError, IndexError, ValueError, TypeError, OSError, json.JSONDecodeError) as e:
            res.problems.append(f"task {task.name}: {task.files[0]} does not fit its loader ({type(e).__name__}: {e})")
        else:
            if not docs:
                res.problems.append(f"task {task.name}: no documents in {task.files[0]}")
            else:
                res.tasks.append(task.name)


def check(root: str | Path) -> CheckResult:
    """Check `root` (a data dir of folders, or one folder with its own MANIFEST.md)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PrimerError(f"{root} is not a directory")
    res = CheckResult(str(root))
    if (root / MF.MANIFEST).is_file():  # one folder: its manifest, and the tasks reading it from the parent
        check_folder(root, res, root.name)
        check_tasks(root.parent, res)
        res.tasks = [t for t in res.tasks if _task_folder(t) == root.name]
        return res
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise PrimerError(f"{root} holds no benchmark folders (expected e.g. piqa/, arc/ with a MANIFEST.md each)")
    for sub in subs:
        check_folder(sub, res, sub.name)
    check_tasks(root, res)
    return res


def _task_folder(name: str) -> str:
    from primer.eval.tasks import get_task  # noqa: PLC0415

    return get_task(name).files[0].split("/")[0]
