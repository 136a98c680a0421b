"""`primer publish`: a run's kept corpus as Parquet shards, a Hub dataset card and an overlap certificate.

`run.publish(PublishConfig)` reads a run directory (layer 9: through `pipeline.records` and
`summaries`), `certificate.certify` looks every benchmark item up in the documents with curate's
n-gram index, `card.render` writes the README.md.
"""
