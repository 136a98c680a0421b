"""`primer tokenize`: byte-level BPE training (`bpe`) and token shards with a checked header (`shards`)."""
