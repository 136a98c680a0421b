"""`primer eval`: benchmark tasks (declarative entries), lm-eval-compatible metrics, a model
interface (loglikelihood / generate) over every model primer loads, a sandbox for generated code,
and a runner with a cache, results JSON and a terminal table.
"""
