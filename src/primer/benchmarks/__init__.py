"""`primer data`: benchmark data on any machine -- pulled from the Hugging Face Hub, checked, and a small slice shipped.

    sources.py   each folder's HF datasets (lm-eval's ids) and the conversion into the layout primer reads
    pull.py      `primer data pull`: fetch (the one network call) or --from save_to_disk copies, convert, MANIFEST
    manifest.py  MANIFEST.md: write, parse, count records per unit, check fields
    check.py     `primer data check`: manifest checksums/counts/fields, then every task through its own loader
    slice.py     the embedded evaluation slice (primer/data/benchmarks): how it was cut, its licences

Where data is looked for (and the pulled folder's place) is `primer.common.paths.benchmark_dir`.
"""

from primer.benchmarks.check import CheckResult, check
from primer.benchmarks.pull import PullResult, folders_for, pull

__all__ = ["CheckResult", "PullResult", "check", "folders_for", "pull"]
