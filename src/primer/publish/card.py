"""The dataset card (README.md) in the Hugging Face Hub's format: a YAML header the Hub reads (license,
language, size category, task categories, the Parquet files as the train split), then how the data was
made: the resolved recipe, counts per stage and per reject reason, the columns, the overlap certificate."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from primer.publish.certificate import markdown

# the Hub's size_categories buckets
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]


def size_category(n: int) -> str:
    return next((name for limit, name in _SIZES if n < limit), "n>100M")


def render(run, curated, synth, rows: list[dict[str, Any]], cert: dict[str, Any], cfg, columns: dict[str, str]) -> str:
    """The card; `columns`: column -> what it holds."""
    name = run.recipe.get("run", {}).get("name") or "primer corpus"
    sources = Counter(r["source"] for r in rows)
    formats = Counter(r["format"] for r in rows if r["format"])
    header = [
        "---",
        f"license: {cfg.license}",
        "language:",
        "- en",
        "size_categories:",
        f"- {size_category(len(rows))}",
        "task_categories:",
        "- text-generation",
        f"pretty_name: {json.dumps(name)}",
        "tags:",
        "- synthetic",
        "- primer",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*.parquet",
        "---",
    ]
    body = [
        f"# {name}",
        "",
        (f"{len(rows)} documents ({', '.join(f'{v} {k}' for k, v in sorted(sources.items()))}) kept by curation in "
         f"a primer run (primer {run.primer_version}, git {run.git_sha or 'unknown'}), published with "
         "`primer publish`."),
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_dir="THIS_FOLDER")["train"]',
        "```",
        "",
        "## Columns",
        "",
        "| column | holds |",
        "|---|---|",
        *[f"| `{k}` | {what} |" for k, what in columns.items()],
        "",
        "## How it was made",
        "",
    ]
    if synth is not None:
        body += [(f"**synth**: teacher `{synth.teacher}` wrote {synth.documents} documents ({synth.tokens} tokens); "
                  f"rejected before curation: {_reasons(synth.rejects)}."),
                 f"Formats kept: {', '.join(f'{k} {v}' for k, v in formats.most_common()) or 'none'}.", ""]
    body += [f"**curate**: {curated.documents_in} documents read, {curated.documents_kept} kept"
             + "".join(f"; {k}: {v.read} read, {v.kept} kept" for k, v in sorted(curated.sources.items())) + ".",
             f"Dropped per step and reason: {_reasons(curated.rejects)}.", ""]
    if curated.decontam is not None:
        body += [(f"Decontamination at curation dropped {curated.decontam.dropped} document(s) "
                  f"({curated.decontam.items} benchmark item(s))."), ""]
    else:
        body += ["Decontamination was off at curation (the certificate below still checks every item).", ""]
    body += ["Stages of the run:", "", "| stage | status | seconds |", "|---|---|---:|"]
    body += [f"| {s.name} | {s.status} | {s.seconds if s.seconds is not None else ''} |" for s in run.stages]
    body += ["", "The resolved recipe (`run.json`):", "", "```json", json.dumps(run.recipe, indent=2, default=str),
             "```", "", markdown(cert)]
    return "\n".join(header + [""] + body)


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"
