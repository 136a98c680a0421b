"""`primer data pull [TASKS] --out DIR`: the standard sets from the Hugging Face Hub, in the layout primer reads.

For each folder the tasks need (`sources.FOLDERS`): fetch its HF splits (`fetch`, the one function
that touches the network), convert the records (`sources.convert`), write the files and a
MANIFEST.md (source, revision, licence, records, bytes, sha256) into a temporary folder, and put it
in place with one rename, so a folder is either whole or absent. `--from DIR` reads the splits from
`datasets.save_to_disk` copies under DIR/<dataset id>/<config>/<split> instead (an offline machine,
a mirror; the tests use it). Every pulled folder then passes `primer data check`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primer.benchmarks import manifest as MF
from primer.benchmarks.check import CheckResult, check_folder, check_tasks
from primer.benchmarks.sources import FOLDERS, Folder, Records, Source, convert
from primer.common.files import DirLock
from primer.errors import PrimerError

DATASETS_HINT = 'pip install -e ".[data]"  (the Hugging Face `datasets` library)'


def folders_for(names: Iterable[str]) -> list[Folder]:
    """Folders holding the data of the named tasks, groups or folders (none named: all of them)."""
    from primer.eval.tasks import expand  # noqa: PLC0415

    names = [n.strip() for n in names if n.strip()]
    if not names or names == ["all"]:
        return list(FOLDERS.values())
    out: dict[str, Folder] = {}
    for name in names:
        if name in FOLDERS:
            out[name] = FOLDERS[name]
            continue
        for task in expand([name]):
            folder = task.files[0].split("/")[0]
            if folder not in FOLDERS:
                raise PrimerError(f"task {task.name} reads {folder}/, which `primer data pull` cannot fetch "
                                  f"(it pulls: {', '.join(FOLDERS)})")
            out[folder] = FOLDERS[folder]
    return list(out.values())


def fetch(src: Source) -> tuple[Records, str]:
    """The records of one HF split and the dataset commit they come from (network)."""
    try:
        import datasets  # noqa: PLC0415
        from huggingface_hub import HfApi  # noqa: PLC0415
    except ImportError:
        raise PrimerError(f"`primer data pull` needs {DATASETS_HINT}") from None
    try:
        sha = HfApi().dataset_info(src.dataset).sha
        ds = datasets.load_dataset(src.dataset, src.config, split=src.split, revision=sha)
    except Exception as e:  # offline, moved dataset, gated dataset...: one line, what to do
        raise PrimerError(f"cannot fetch {src.dataset} ({src.config or 'default'}, {src.split}) from the Hugging Face "
                          f"Hub: {type(e).__name__}: {str(e)[:200]}. On a machine with network, run the same "
                          f"command (or save the splits with datasets' save_to_disk and pass --from DIR)") from None
    return [dict(r) for r in ds], sha


def local_path(root: Path, src: Source) -> Path:
    return root / src.dataset / (src.config or "default") / src.split


def load_local(root: Path, src: Source) -> tuple[Records, str]:
    """A split saved with `datasets.Dataset.save_to_disk` under ROOT/<dataset id>/<config>/<split>."""
    try:
        import datasets  # noqa: PLC0415
    except ImportError:
        raise PrimerError(f"`primer data pull --from` needs {DATASETS_HINT}") from None
    path = local_path(root, src)
    if not path.is_dir():
        raise PrimerError(f"{path} not found: --from DIR holds datasets.save_to_disk copies at "
                          "DIR/<dataset id>/<config or 'default'>/<split>")
    ds = datasets.load_from_disk(str(path))
    return [dict(r) for r in ds], f"local copy {path} (datasets fingerprint {getattr(ds, '_fingerprint', '?')})"


@dataclass
class PullResult:
    out: str
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """folder -> its files' records and where they came from"""
    check: CheckResult | None = None


def pull(names: Iterable[str], out: str | Path, *, source_dir: str | Path | None = None,
         log: Callable[[str], None] = print) -> PullResult:
    out = Path(out).expanduser()
    folders = folders_for(names)
    res = PullResult(str(out))
    with DirLock(out, "`primer data pull`"):
        for folder in folders:
            t0 = time.perf_counter()
            records, revisions = {}, {}
            for key, src in folder.sources.items():
                log(f"{folder.name}: {src.dataset} ({src.config or 'default'}, {src.split}) ...")
                records[key], revisions[key] = (load_local(Path(source_dir), src) if source_dir else fetch(src))
            files = convert(folder, records)
            _write(out, folder, files, revisions)
            res.folders[folder.name] = {"files": {k: f.records for k, f in files.items()}, "revisions": revisions}
            log(f"{folder.name}: {sum(f.records for f in files.values()):,} records in {len(files)} file(s), "
                f"{time.perf_counter() - t0:.1f} s")
        res.check = CheckResult(str(out))
        for folder in folders:
            check_folder(out / folder.name, res.check, folder.name)
        check_tasks(out, res.check)
    return res


def _write(out: Path, folder: Folder, files: dict, revisions: dict[str, str]) -> None:
    tmp = out / f".{folder.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    for rel, f in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f.data)
    entries = [MF.entry(tmp, rel, f.unit, f.records) for rel, f in files.items()]
    source = [f"`{src.dataset}` ({src.config or 'default'} config, {src.split} split) at revision `{revisions[key]}`"
              for key, src in folder.sources.items()]
    text = MF.render(
        f"{folder.name} (pulled by `primer data pull`)",
        f"Converted from the Hugging Face dataset(s) below into the layout primer's loaders read "
        f"(the format of shared/benchmarks/{folder.name}), on {time.strftime('%Y-%m-%d')}.",
        source + [f"lm-evaluation-harness task: `{folder.lm_eval}`"], [folder.licence], entries,
        {rel: list(f.fields) for rel, f in files.items()},
        notes=["Written by primer.benchmarks.sources; check with `primer data check`."])
    (tmp / MF.MANIFEST).write_text(text, encoding="utf-8")
    final = out / folder.name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
