"""`primer run` and `primer report`: stage types (`spec`), the stage adapters (`stages`), the runner
(fingerprints, caching, resume, run.json) and the self-contained HTML report."""
