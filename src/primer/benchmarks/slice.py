"""The evaluation slice embedded in the package (primer/data/benchmarks): how it is cut and what it says about itself.

The one place the project ships benchmark data: the first `SLICE_ITEMS` records of three
permissively licensed sets, byte for byte as in shared/benchmarks (so the same loaders read them
and the first N items score the same as on the full files), each folder with its licence text, a
NOTICE (attribution, what was changed) and a MANIFEST.md that `primer data check` verifies.

    HellaSwag validation   MIT (rowanz/hellaswag; the text export klosax/hellaswag_text_data, MIT)
    PIQA validation        Academic Free License v3.0 (ybisk/piqa data README)
    ARC-Easy test          CC BY-SA 4.0 (AI2's ARC); in llm-foundry's format (Apache-2.0 repository)

`primer run` falls back on it when no data folder is found, so a fresh offline install still
evaluates and audits; the report says so, with the slice's size, interval width and the pull command.
Regenerate (from a checkout beside shared/benchmarks): `python -m primer.benchmarks.slice ../shared/benchmarks`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from primer.benchmarks import manifest as MF
from primer.common.paths import embedded_dir, pull_hint

SLICE_ITEMS = 300
TASKS = ("hellaswag", "piqa", "arc_easy")
# folder -> (files cut to their first SLICE_ITEMS lines, licence name, attribution and changes)
SLICES = {
    "hellaswag": (("hellaswag_val.jsonl",), "MIT",
                  "HellaSwag (Zellers, Holtzman, Bisk, Farhadi, Choi; ACL 2019), validation split, via the text export "
                  "klosax/hellaswag_text_data (MIT). LICENSE holds the MIT terms; the upstream copyright line was not "
                  "available to copy verbatim, so it names the authors."),
    "piqa": (("valid.jsonl", "valid-labels.txt"), "Academic Free License v3.0",
             "PIQA (Bisk, Zellers, Le Bras, Gao, Choi; AAAI 2020), validation split, ybisk/ybisk.github.io piqa/data, "
             "licensed under the Academic Free License version 3.0 (per piqa/data/README.md)."),
    "arc": (("arc_easy_test.jsonl",), "CC BY-SA 4.0",
            "ARC-Easy (Clark et al., 2018, Allen Institute for AI; CC BY-SA 4.0), test split, in mosaicml/llm-foundry's "
            "pre-processed format (query/choices/gold; repository licence Apache-2.0, copy in LICENSE-llm-foundry). "
            "This slice is distributed under CC BY-SA 4.0 (LICENSE)."),
}


def _section(text: str, title: str) -> list[str]:
    m = re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return [line for line in (m.group(1).strip().splitlines() if m else []) if line.strip()]


def write_slice(src: Path, out: Path | None = None, n: int = SLICE_ITEMS) -> Path:
    """Cut the slice from a shared/benchmarks folder `src` into `out` (default: the package's)."""
    out = out or embedded_dir()
    for folder, (files, licence, attribution) in SLICES.items():
        d = out / folder
        d.mkdir(parents=True, exist_ok=True)
        src_man = MF.read(src / folder)
        units = {f.path: f.unit for f in src_man.files}
        entries, fields = [], {}
        for rel in files:
            lines = (src / folder / rel).read_bytes().split(b"\n")[:n]
            (d / rel).write_bytes(b"\n".join(lines) + b"\n")
            entries.append(MF.entry(d, rel, units[rel], n))
            if rel in src_man.fields:
                fields[rel] = src_man.fields[rel][0]
        src_text = (src / folder / MF.MANIFEST).read_text(encoding="utf-8")
        (d / MF.MANIFEST).write_text(MF.render(
            f"{folder}: the embedded evaluation slice (first {n} records)",
            f"The first {n} records of shared/benchmarks/{folder}, byte for byte; shipped with primer so an offline "
            f"install evaluates. Full sets: `{pull_hint([folder])}`.",
            [f"shared/benchmarks/{folder}, whose source is:"] + [f"  {s.lstrip('- ')}" for s in _section(src_text, "Source")],
            [f"{licence}: see LICENSE and NOTICE in this folder."] + [s.lstrip("- ") for s in _section(src_text, "License")],
            entries, fields), encoding="utf-8")
        (d / "NOTICE").write_text(f"{attribution}\n\nChanges: only the first {n} records are kept; nothing else was "
                                  "changed.\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    print(write_slice(Path(sys.argv[1])))
