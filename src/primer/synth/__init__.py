"""Synthetic textbook generation (the phi recipe's core): topics x prompt grid -> teacher -> JSONL.

    from primer.synth import SynthConfig, synth
    summary = synth(SynthConfig(out="runs/synth", n=20))

Modules: `topics` (shipped topic tree, teacher expansion), `grid` (prompt grid as data),
`quality` (degenerate-output rejection, diversity figures), `run` (the resumable runner).
"""

from primer.synth.run import SynthConfig, format_summary, synth

__all__ = ["SynthConfig", "synth", "format_summary"]
