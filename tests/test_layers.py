"""The package's import graph runs one way: no cycles, and no lower layer imports a higher one.

Imports are read from the source (module level and inside functions alike), so an import hidden in
a function to dodge a cycle is still an edge. LAYERS is the one written copy of the layer order
(ARCHITECTURE.md draws it): a module may import its own package and packages of lower layers;
packages in the same layer never import each other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Packages marked "planned" do not exist yet; their place is decided here so a new verb lands in it.
LAYERS: list[tuple[str, ...]] = [
    ("primer", "primer.errors"),                  # the version string and the one error type
    ("primer.config", "primer.common", "primer.sandbox"),  # dataclass configs; JSONL, locks, provenance, data paths; the code sandbox
    ("primer.model",),                            # the decoder, tokenizer, generation
    ("primer.weights",),                          # every external format <-> the model; `primer export`
    ("primer.teachers", "primer.tokens", "primer.index"),  # teachers; `primer tokenize`; retrieval (`primer index`)
    ("primer.synth", "primer.train", "primer.eval", "primer.serve"),  # verbs on the layers below; `primer serve`
    ("primer.curate", "primer.tune", "primer.benchmarks"),  # curate uses eval's tasks and teachers; tune: SFT/DPO
                                                  # on train's loop; `primer data` checks folders through eval's tasks
    ("primer.audit",),                            # eval's tasks and models, curate's n-gram index
    ("primer.pipeline",),                         # `primer run` / `primer report` over every stage
    ("primer.publish", "primer.compare"),         # read run directories: `primer publish`, `primer compare`
    ("primer.cli", "primer.__main__"),            # thin leaves, one per verb
]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "primer").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Modules of the package that `name` imports anywhere in its file."""
    out = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            # a package's __init__ importing its own children is not an edge between layers
            if t and t != name and not t.startswith(name + "."):
                out.add(t)
    return out


def _layer_of(module: str) -> int:
    best, depth = None, -1
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = i, prefix.count(".")
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS (and to ARCHITECTURE.md)")
    return best


def _package(module: str) -> str:
    for group in LAYERS:
        for prefix in sorted(group, key=lambda p: -p.count(".")):
            if module == prefix or module.startswith(prefix + "."):
                return prefix
    return module


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_every_module_has_a_layer(graph):
    for m in graph:
        _layer_of(m)


def test_no_import_cycles(graph):
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_lower_layers_never_import_higher_ones(graph):
    bad = defaultdict(list)
    for m, targets in graph.items():
        lm, pm = _layer_of(m), _package(m)
        for t in targets:
            lt, pt = _layer_of(t), _package(t)
            if pt == pm:
                continue
            if lt > lm or (lt == lm and pt != pm):
                bad[m].append(f"{t} (layer {lt} {pt}, from layer {lm} {pm})")
    assert not bad, "imports against the layer order:\n" + "\n".join(f"  {m} -> {', '.join(v)}" for m, v in sorted(bad.items()))


def test_the_checker_sees_function_level_imports(tmp_path):
    """The walker must count an import inside a function (the usual way a cycle is hidden)."""
    mods = {"primer.a": tmp_path / "a.py", "primer.b": tmp_path / "b.py"}
    mods["primer.a"].write_text("def f():\n    from primer.b import g\n    return g\n")
    mods["primer.b"].write_text("import os\n")
    assert _imports("primer.a", mods["primer.a"], mods) == {"primer.b"}
    assert _imports("primer.b", mods["primer.b"], mods) == set()


def test_cli_leaves_never_import_each_other(graph):
    """One thin leaf per verb; what two leaves share lives beside them (e.g. cli/sampling.py)."""
    from primer.cli import LEAVES

    leaves = {f"primer.cli.{name}" for name in LEAVES}
    crossing = sorted((m, d) for m in leaves for d in graph.get(m, ()) if d in leaves and d != m)
    assert not crossing, crossing


def test_a_run_of_one_verb_imports_only_that_leaf():
    """`primer generate` builds only its own parser (the other leaves bring their configs and libraries: ~11 MB);
    `primer --help` or an unknown verb builds the whole command, to list every verb."""
    import subprocess
    import sys

    from primer.cli import LEAVES, build_parser

    code = ("import sys; from primer.cli import build_parser; build_parser('generate'); "
            "print(sorted(m for m in sys.modules if m.startswith('primer.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['primer.cli.generate', 'primer.cli.sampling']"
    for verb in (None, "generat"):
        sub = next(a for a in build_parser(verb)._actions if a.dest == "verb")
        assert list(sub.choices) == LEAVES
