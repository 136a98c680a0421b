"""Helpers every layer uses and that know nothing of models or stages: JSON Lines I/O, locks and
atomic writes, provenance (git sha, package versions, hardware), and where data and caches live."""
