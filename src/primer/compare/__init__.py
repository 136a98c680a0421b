"""`primer compare`: runs side by side (data, training curves, held-out bits per byte, paired benchmark
differences, audit verdicts, samples) in one HTML page; see `primer.compare.run` (measures) and `primer.compare.page` (HTML + JSON)."""
