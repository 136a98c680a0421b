"""Retrieval for facts: `primer index` (BM25 over chunked documents) and the prompt template passages use.

`documents` reads inputs and cuts them into chunks with offsets; `bm25` builds, stores, loads and
searches an index; `prompt` is the one template retrieved passages enter a prompt with.
"""
