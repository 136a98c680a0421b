"""Run tasks on a model: build requests, answer them (from the cache when possible), score,
aggregate with standard errors, and write results JSON and a terminal table.

The cache is one sqlite file; a key is sha256(model fingerprint, request kind, request), so a
re-run (or a run interrupted and started again) only computes what is missing. Requests are
answered in chunks of documents, each chunk committed, so an interruption loses at most a chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import random
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from primer.common.files import DirLock, atomic_write_bytes
from primer.common.paths import cache_dir
from primer.common.provenance import git_sha, package_versions
from primer.config import Count, check_config, to_dict
from primer.errors import PrimerError
from primer.eval import metrics as M
from primer.eval.served import NeedsPromptLogprobs
from primer.eval.tasks import GROUPS, Task, expand
from primer.sandbox import allow_unsafe, isolation_mode

# Documents answered (and committed to the cache) together: at least CHUNK_DOCS (what an interruption may lose), and at
# least CHUNK_BATCHES of the model's batches, so the decoder gets full batches and continuous batching refills the slots
# of finished replies until a chunk's last requests (a chunk of one batch decodes to its longest reply on ever
# fewer rows).
CHUNK_DOCS = 16
CHUNK_BATCHES = 4
RETRIEVE_K = 20  # hits kept per open-book document: recall@1/5/20


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: ["piqa"])
    """Task or group names, e.g. piqa,arc_easy,mmlu."""
    shots: int | None = None
    """Few-shot examples per prompt (default: each task's own, 0 for most; mmlu/gsm8k/mbpp as lm-eval)."""
    limit: Count | None = None
    """Evaluate only the first N documents of each task (N per MMLU subject)."""
    sample: Count | None = None
    """Evaluate a random sample of N documents of each task (seeded with `seed`, kept in file order)."""
    index: Path | None = None
    """Search index (`primer index build`) for open-book tasks (*_openbook): its top chunks precede each question."""
    passages: int = 3
    """Retrieved chunks put into each open-book prompt (recall@k is scored on the top 20)."""
    data_dir: Path | None = None
    """Folder laid out like shared/benchmarks; 'embedded': the slice shipped with primer; None = no data found."""
    samples: Count = 1
    """Completions per problem for code tasks (pass@k is reported for each k <= samples)."""
    temperature: float = 0.0
    """Sampling temperature for generation (0 = greedy)."""
    seed: int = 1234
    """Seed for few-shot sampling and generation."""
    log_samples: bool = False
    """Keep per-document records (prompt, targets, responses, scores) in the results JSON."""
    cache: Path | None = None
    """sqlite cache of model answers (default: ~/.cache/primer/eval-cache.sqlite); 'none' disables."""
    chat: bool = False
    """Generative tasks: send each prompt (few-shot examples included) as one user turn through the model's chat
    template, as lm-eval's --apply_chat_template does; IFEval and XSTest always do."""
    max_gen_tokens: Count | None = None
    """Cap every generative task's token budget (a shorter CPU run; it changes scores, so it is recorded)."""
    judge: str | None = None
    """A teacher ('bundled', a .gguf, a model dir, an OpenAI-compatible base URL) that also labels the replies of
    tasks with a rubric (XSTest: the paper's three classes), beside their own rule."""
    judge_model: str | None = None
    """the model name a served judge (http://...) is asked for"""
    unsafe_code: bool = False
    """Run code tasks' model-written code even where no sandbox isolation (bubblewrap, namespaces) works:
    resource limits only, the code can reach the network and your files. Off: such a run is refused."""


class Cache:
    """Model answers by sha256(model fingerprint, request kind, request), in one sqlite file."""

    def __init__(self, path: Path | None):
        self.db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path))
            self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")

    @classmethod
    def open(cls, setting: Path | str | None) -> Cache:
        """A config's `cache` field: None = the default file, the string 'none' = no cache, else a path."""
        if setting is not None and str(setting).lower() == "none":
            return cls(None)
        return cls(Path(setting) if setting is not None else cache_dir() / "eval-cache.sqlite")

    @staticmethod
    def key(fingerprint: str, kind: str, request: Any) -> str:
        blob = json.dumps([fingerprint, kind, request], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if self.db is None or not keys:
            return {}
        out = {}
        for i in range(0, len(keys), 500):
            part = keys[i: i + 500]
            q = f"SELECT key, value FROM answers WHERE key IN ({','.join('?' * len(part))})"
            out.update({k: json.loads(v) for k, v in self.db.execute(q, part)})
        return out

    def put_many(self, items: dict[str, Any]) -> None:
        if self.db is None or not items:
            return
        self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", [(k, json.dumps(v)) for k, v in items.items()])
        self.db.commit()


# -- requests per document ------------------------------------------------------------------------
def build_requests(task: Task, doc: dict, prefix: str, cfg: EvalConfig, lm=None) -> tuple[str, list]:
    """(kind, requests) for one document; kind is the LM method that answers them.

    A chat prompt is rendered here, with `lm.chat_prompt`, so the cache key is the exact text sent."""
    if task.kind == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if task.multiple_input:
            cont = task.target_delimiter + task.doc_to_target(doc)
            return "loglikelihood", [[prefix + c, cont] for c in choices]
        ctx = prefix + task.doc_to_text(doc)
        return "loglikelihood", [[ctx, task.target_delimiter + c] for c in choices]
    if task.kind == "loglikelihood":
        return "loglikelihood", [[prefix + task.doc_to_text(doc), task.target_delimiter + task.doc_to_target(doc)]]
    if task.kind == "rolling":
        return "rolling", [task.doc_to_target(doc)]
    n = max(1, cfg.samples) if task.pass_at_k else 1
    temp = cfg.temperature if n > 1 or cfg.temperature > 0 else 0.0
    prompt = prefix + task.doc_to_text(doc)
    if task.chat or cfg.chat:
        if lm is None or not hasattr(lm, "chat_prompt"):
            raise PrimerError(f"task {task.name} is a chat task; the model interface has no chat template renderer")
        prompt = lm.chat_prompt([{"role": "user", "content": prompt}])
    budget = min(task.max_tokens, cfg.max_gen_tokens) if cfg.max_gen_tokens else task.max_tokens
    return "generate", [[prompt, list(task.until), budget, temp, cfg.seed + s] for s in range(n)]


def retrieve(task: Task, docs: list[dict], cfg: EvalConfig, loaded: dict[str, Any]) -> list[dict]:
    """Open-book documents: each gets its query's top hits as `retrieved` and the first --passages as `passages`."""
    if cfg.index is None:
        raise PrimerError(f"task {task.name} reads passages from a search index: pass --index IDX "
                          "(build one with `primer index build DOCS --out IDX`)")
    from primer.index.bm25 import Index  # noqa: PLC0415

    if str(cfg.index) not in loaded:
        loaded[str(cfg.index)] = Index.load(cfg.index)
    hits = loaded[str(cfg.index)].search_many([task.query(d) for d in docs], k=max(RETRIEVE_K, cfg.passages))
    return [{**d, "retrieved": [h.to_dict() for h in hs], "passages": [h.to_dict() for h in hs[: cfg.passages]]}
            for d, hs in zip(docs, hits)]


def answer(lm, kind: str, reqs: list) -> list:
    if kind == "loglikelihood":
        return [list(r) for r in lm.loglikelihood([tuple(r) for r in reqs])]
    if kind == "rolling":
        return lm.loglikelihood_rolling(reqs)
    out: list = [None] * len(reqs)
    groups: dict[tuple, list[int]] = {}
    for i, (_, stop, mx, temp, seed) in enumerate(reqs):
        groups.setdefault((tuple(stop), mx, temp, seed if temp > 0 else 0), []).append(i)
    for (stop, mx, temp, seed), ix in groups.items():
        for i, text in zip(ix, lm.generate([reqs[i][0] for i in ix], stop=list(stop), max_tokens=mx,
                                           temperature=temp, seed=seed)):
            out[i] = text
    return out


def score_doc(task: Task, doc: dict, resps: list) -> dict[str, Any]:
    if task.kind == "multiple_choice":
        lls = [r[0] for r in resps]
        if task.multiple_input:
            gold = task.doc_to_text(doc)
            return {"acc": float(int(max(range(len(lls)), key=lls.__getitem__)) == gold)}
        s = M.multiple_choice(lls, task.doc_to_choice(doc), task.doc_to_target(doc))
        return {k: v for k, v in s.items() if k in task.metrics or k == "acc_bytes"}
    if task.kind == "loglikelihood":
        ll, greedy = resps[0]
        return {"acc": float(greedy), "perplexity": ll}
    if task.kind == "rolling":
        page = doc.get("page", task.doc_to_target(doc))
        ll = resps[0]
        return {"word_perplexity": (ll, M.count_words(page)), "byte_perplexity": (ll, len(page.encode("utf-8"))),
                "bits_per_byte": (ll, len(page.encode("utf-8")))}
    return task.score(doc, list(resps))  # type: ignore[misc]


def aggregate(task: Task, scores: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    # every metric any document reported (XSTest reports each prompt type on its own documents only)
    names = [k for k in dict.fromkeys(k for s in scores for k in s) if not k.startswith("_")]
    for name in names:
        xs = [s[name] for s in scores if name in s]
        if name in task.aggregations:
            out.update({name + suffix: v for suffix, v in task.aggregations[name](xs).items()})
        elif name == "perplexity":
            out[name] = M.perplexity(xs)
            out[name + "_stderr"] = M.bootstrap_stderr(M.perplexity, xs, iters=100)
        elif name in ("word_perplexity", "byte_perplexity"):
            out[name], out[name + "_stderr"] = M.weighted_perplexity(xs), None
        elif name == "bits_per_byte":
            out[name], out[name + "_stderr"] = M.bits_per_byte(xs), None
        else:
            out[name], out[name + "_stderr"] = M.mean(xs), M.mean_stderr(xs)
    return out


# -- the cache -> answer -> score loop (eval and audit both run it) --------------------------------
Built = tuple[str, list]
"""One document's requests: (kind, requests), as `build_requests` makes them."""


def chunk_docs(lm) -> int:
    """Documents per chunk for `lm`: CHUNK_DOCS, or CHUNK_BATCHES of its batches when that is more."""
    return max(CHUNK_DOCS, CHUNK_BATCHES * int(getattr(lm, "batch_size", 0) or 0))


def answer_docs(lm, built: list[Built], cache: Cache, progress: Callable[[int], None] | None = None,
                ) -> tuple[list[list], int]:
    """The responses to each document's requests, and how many documents needed the model.

    Answers come from `cache` where it has them (keyed by the model's fingerprint; a model without
    one is never cached), the rest from `lm`, a chunk of documents at a time (`chunk_docs`) with requests
    of one kind batched together; each chunk is written to the cache as soon as it is answered, so an
    interrupted run loses at most one chunk. `progress(n)` is told after each chunk.
    """
    fp = getattr(lm, "fingerprint", None)
    out: list[list] = [[] for _ in built]
    computed = 0
    size = chunk_docs(lm)
    for c0 in range(0, len(built), size):
        chunk = range(c0, min(len(built), c0 + size))
        keys = {(i, j): Cache.key(fp, built[i][0], r) for i in chunk for j, r in enumerate(built[i][1])} if fp else {}
        have = cache.get_many(list(keys.values()))
        todo: dict[str, list[tuple[int, int]]] = {}
        for i in chunk:
            for j in range(len(built[i][1])):
                if not fp or keys[(i, j)] not in have:
                    todo.setdefault(built[i][0], []).append((i, j))
        got: dict[tuple[int, int], Any] = {}
        for kind, ij in todo.items():
            got.update(zip(ij, answer(lm, kind, [built[i][1][j] for i, j in ij])))
        if fp:
            cache.put_many({keys[k]: a for k, a in got.items()})
        computed += len({i for i, _ in got})
        for i in chunk:
            out[i] = [got[(i, j)] if (i, j) in got else have[keys[(i, j)]] for j in range(len(built[i][1]))]
        if progress is not None:
            progress(len(chunk))
    return out, computed


def code_sandbox(tasks: list[Task], unsafe_code: bool) -> str | None:
    """The sandbox isolation the code-running tasks among `tasks` get (None: there are none). Raises the
    refusal (a PrimerError naming what to install) when there is no isolation and `unsafe_code` is off,
    so callers check it before loading a model."""
    if not any(t.runs_code for t in tasks):
        return None
    with allow_unsafe(unsafe_code):
        return isolation_mode()


def score_docs(lm, task: Task, docs: list[dict], built: list[Built], cache: Cache, *, progress: bool = False,
               label: str = "", unsafe_code: bool = False) -> tuple[list[dict[str, Any]], list[list], int]:
    """Answer every document's requests (`answer_docs`) and score each with the task's metric(s);
    `unsafe_code` lets code tasks run without isolation where there is none (see `code_sandbox`).

    Returns (per-document scores, responses, documents the model was asked about)."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    bar = tqdm(total=len(docs), desc=label or task.name, unit="doc", disable=not progress or len(docs) < 2,
               leave=False)
    resps, computed = answer_docs(lm, built, cache, bar.update)
    bar.close()
    with allow_unsafe(unsafe_code):
        return [score_doc(task, d, r) for d, r in zip(docs, resps)], resps, computed


# -- results -------------------------------------------------------------------------------------
@dataclass
class TaskResult:
    """One task's aggregate (the results JSON's `tasks.<name>`)."""

    version: str
    n: int
    shots: int
    metrics: dict[str, float | None]
    """each metric and its `<metric>_stderr`"""
    primary: str
    reported: list[str]
    group: str | None
    computed: int
    """documents the model was asked about (the rest came from the cache)"""
    seconds: float
    items_per_s: float | None
    notes: str


@dataclass
class EvalResult:
    """What `run` returns and writes as the results JSON (`evaluate` fills only tasks/groups/samples)."""

    model: dict[str, Any] | None = None
    """name and fingerprint of the model scored"""
    config: dict[str, Any] | None = None
    task_versions: dict[str, str] | None = None
    environment: dict[str, str] | None = None
    git: str | None = None
    argv: list[str] | None = None
    started: str | None = None
    seconds: float | None = None
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """group -> micro and macro averages (`group_metrics`)"""
    samples: dict[str, list[dict]] | None = None
    """task -> per-document records, with --log-samples"""
    sandbox: str | None = None
    """isolation model-written code ran under (bwrap, namespaces, or none with unsafe_code); None: no code ran"""


# -- the run ------------------------------------------------------------------------------------
def evaluate(lm, cfg: EvalConfig, progress: bool = True) -> EvalResult:
    check_config(cfg)
    tasks = expand(cfg.tasks)
    if not tasks:
        raise PrimerError("no tasks given; pass --tasks NAME[,NAME...]")
    sandbox = code_sandbox(tasks, cfg.unsafe_code)
    cache = Cache.open(cfg.cache)
    results = EvalResult(samples={} if cfg.log_samples else None, sandbox=sandbox)
    indexes: dict[str, Any] = {}  # open-book tasks' search indexes, loaded once
    judges: dict[str, Any] = {}  # the --judge teacher, loaded at the first task with a rubric
    for task in tasks:
        docs = task.docs(cfg.data_dir)
        if cfg.sample is not None and cfg.sample < len(docs):
            docs = [docs[i] for i in sorted(random.Random(cfg.seed).sample(range(len(docs)), cfg.sample))]
        if cfg.limit is not None:
            docs = docs[: cfg.limit]
        if task.query is not None:
            docs = retrieve(task, docs, cfg, indexes)
        shots = task.default_shots if cfg.shots is None else cfg.shots
        pool = task.fewshot_pool(cfg.data_dir) if shots > 0 else None
        if shots > 0 and pool is None:
            pool = task.docs(cfg.data_dir)
        rnd = random.Random(cfg.seed)
        built = []
        for doc in docs:
            prefix = task.fewshot_prefix(doc, shots, pool, rnd) if (shots > 0 or task.description) else ""
            built.append(build_requests(task, doc, prefix, cfg, lm))
        t0 = time.perf_counter()
        try:
            scores, resps, computed = score_docs(lm, task, docs, built, cache, progress=progress,
                                                 unsafe_code=cfg.unsafe_code)
        except NeedsPromptLogprobs as e:
            raise PrimerError(f"task {task.name} ({task.kind.replace('_', ' ')}) scores given text: {e}") from None
        verdicts = None
        if cfg.judge and task.judge is not None:
            if "judge" not in judges:
                judges["judge"] = load_judge(cfg)
            verdicts = judge_docs(judges["judge"], task, docs, resps, scores, cache)
        secs = time.perf_counter() - t0
        metrics = aggregate(task, scores)
        if verdicts is not None:
            metrics["judge_unparsable"] = float(sum(v["label"] is None for v in verdicts))
        results.tasks[task.name] = TaskResult(
            version=task.version, n=len(docs), shots=shots, metrics=metrics, primary=task.metrics[0],
            reported=list(task.metrics) + ([f"judge_{m}" for m in task.metrics if f"judge_{m}" in metrics]
                                           + ["judge_unparsable"] if verdicts is not None else []), group=task.group, computed=computed, seconds=round(secs, 3),
            items_per_s=round(computed / secs, 3) if computed and secs > 0 else None, notes=task.notes,
        )
        if results.samples is not None:
            results.samples[task.name] = [
                {"doc_id": i, "requests": built[i][1], "responses": resps[i],
                 "target": _jsonable(task.doc_to_target(docs[i])), "scores": _jsonable(scores[i]),
                 **({"judge": verdicts[i]} if verdicts is not None else {}),
                 **({"passages": [{k: h[k] for k in ("rank", "score", "doc_id", "title", "start", "end")}
                                  for h in docs[i]["passages"]]} if "passages" in docs[i] else {})}
                for i in range(len(docs))]
    for teacher in judges.values():
        teacher.close()
    for group, members in GROUPS.items():
        done = [results.tasks[m] for m in members if m in results.tasks]
        if done:
            results.groups[group] = group_metrics(done)
    return results


def load_judge(cfg: EvalConfig):
    from primer.teachers import load_teacher

    if cfg.judge.startswith(("http://", "https://")) and not cfg.judge_model:
        raise PrimerError("a served judge needs the model to ask for: pass --judge-model NAME")
    return load_teacher(cfg.judge, cfg.judge_model)


def judge_docs(teacher, task: Task, docs: list[dict], resps: list, scores: list[dict], cache: Cache) -> list[dict]:
    """The judge's label of each document's first reply (greedy, cached by judge and question), merged into
    `scores` where it names one; returns {"label", "verdict"} per document (label None: unparsable, not scored)."""
    from primer.teachers import Sampling

    judge = task.judge
    questions = [judge.prompt(d, r[0] if r else "") for d, r in zip(docs, resps)]
    keys = [Cache.key(f"judge:{teacher.name}", "judge", q) for q in questions]
    have = cache.get_many(keys)
    todo = [i for i, k in enumerate(keys) if k not in have]
    errors: dict[int, str] = {}
    if todo:
        got = teacher.complete([questions[i] for i in todo], Sampling(max_tokens=judge.max_tokens, temperature=0.0))
        errors = {i: c.error for i, c in zip(todo, got) if c.error}  # a failed call is reported, never cached
        new = {keys[i]: c.text for i, c in zip(todo, got) if not c.error}
        cache.put_many(new)
        have.update(new)
    out = []
    for i, (d, k, s) in enumerate(zip(docs, keys, scores)):
        label = judge.parse(have[k]) if k in have else None
        if label is not None:
            s.update(judge.score(d, label))
        out.append({"label": label, "verdict": have.get(k, ""), **({"error": errors[i]} if i in errors else {})})
    if errors:
        print(f"eval: the judge failed on {len(errors)} of {len(docs)} {task.name} replies (first: {next(iter(errors.values()))});"
              " they are counted in judge_unparsable", file=sys.stderr)
    return out


def group_metrics(done: list[TaskResult]) -> dict[str, Any]:
    """Micro (size-weighted, lm-eval's group number) and macro (mean over subtasks) averages."""
    sizes = [t.n for t in done]
    out: dict[str, Any] = {"n": sum(sizes), "subtasks": len(done)}
    for name in done[0].metrics:
        if name.endswith("_stderr"):
            continue
        vals = [t.metrics[name] for t in done]
        errs = [t.metrics.get(name + "_stderr") for t in done]
        out[f"{name},micro"] = sum(v * n for v, n in zip(vals, sizes)) / sum(sizes)
        out[f"{name},macro"] = sum(vals) / len(vals)
        if all(e is not None and not math.isnan(e) for e in errs) and sum(sizes) > len(sizes):
            out[f"{name},micro_stderr"] = M.pooled_sample_stderr(errs, sizes)
            out[f"{name},macro_stderr"] = M.unweighted_mean_stderr(errs)
    return out


def _jsonable(x):
    if isinstance(x, tuple):
        return list(x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


def run(lm, cfg: EvalConfig, output: Path | None = None, progress: bool = True) -> EvalResult:
    """evaluate() + model/config/environment header, written to `output` when given (claimed first, so
    a second eval writing the same file, or an unwritable path, fails before any work)."""
    with DirLock.for_file(output, "primer eval") if output is not None else contextlib.nullcontext():
        return _run(lm, cfg, output, progress)


def _run(lm, cfg: EvalConfig, output: Path | None, progress: bool) -> EvalResult:
    t0 = time.time()
    res = evaluate(lm, cfg, progress=progress)
    full = dataclasses.replace(
        res, model={"name": lm.name, "fingerprint": lm.fingerprint},
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        task_versions={n: t.version for n, t in res.tasks.items()},
        environment={**package_versions(), "platform": platform.platform()}, git=git_sha(), argv=sys.argv,
        started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)), seconds=round(time.time() - t0, 2),
    )
    if output is not None:
        record = to_dict(full)
        if full.samples is None:
            del record["samples"]
        atomic_write_bytes(output, json.dumps(record, indent=2, default=str, allow_nan=True).encode())
    return full


def table(results: EvalResult) -> str:
    """Markdown-style table: task, version, shots, n, metric, value, stderr (accuracies in %).
    Shows each task's declared metrics; the JSON also has acc_bytes for multiple choice."""
    rows = [("task", "version", "shots", "n", "metric", "value", "± stderr")]

    def fmt(name: str, v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if name == "judge_unparsable":
            return f"{v:.0f}"
        pct = not any(s in name for s in ("perplexity", "bits_per_byte"))
        return f"{100 * v:.2f}" if pct else f"{v:.4f}"

    grouped = {t for g in results.groups for t in GROUPS[g]}
    for name, t in results.tasks.items():
        if name in grouped:
            continue
        for m, v in t.metrics.items():
            if m.endswith("_stderr") or m not in t.reported:
                continue
            rows.append((name, t.version, str(t.shots), str(t.n), m, fmt(m, v), fmt(m, t.metrics.get(m + "_stderr"))))
    for g, gm in results.groups.items():
        for m, v in gm.items():
            if m in ("n", "subtasks") or m.endswith("_stderr") or m.startswith("acc_bytes"):
                continue
            shots = next((results.tasks[t].shots for t in GROUPS[g] if t in results.tasks), "")
            rows.append((f"{g} ({gm['subtasks']} subjects)", "", str(shots), str(gm["n"]), m, fmt(m, v), fmt(m, gm.get(m + "_stderr"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
