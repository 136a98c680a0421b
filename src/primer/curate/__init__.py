"""Curation: documents, heuristic filters, educational-value scoring, MinHash dedup, decontamination.

    from primer.curate import CurateConfig, curate
    report = curate(CurateConfig(input="raw/", out="curated/", benchmarks="../shared/benchmarks"))

Modules: `document` (Document, readers/writers), `steps` (Step/Filter, counts), `filters`
(heuristics), `dedup` (MinHash LSH + exact), `decontam` (NgramIndex), `edu` (annotate, scorer),
`pipeline` (passes, executors, resume).
"""

from primer.curate.document import Document, read_documents
from primer.curate.pipeline import CurateConfig, curate
from primer.curate.steps import Context, Filter, Stats, Step, run_steps

__all__ = ["Document", "read_documents", "CurateConfig", "curate", "Context", "Filter", "Stats", "Step", "run_steps"]
