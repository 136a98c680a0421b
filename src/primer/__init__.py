"""primer: build small language models the phi way (data first, small model, honest eval)."""

__version__ = "0.1.0"
