"""The resumable synth runner: prompts from the grid -> teacher -> quality check -> JSONL shards.

Output directory layout:
    data-00000.jsonl ...   accepted documents, append-only, `shard_docs` lines per shard
    rejects.jsonl          rejected completions with their reason (never training data)
    runs.jsonl             one line per invocation: resolved config, teacher, versions
    summary.json           the figures of the last finished run

Documents of a format that carries an answer (exercises, code) are checked in the sandbox before they
are kept (`verify.py`), beside the teacher, and carry their `verification` record, kept or rejected.

Crash safety: every record is one `os.write` of one line on an O_APPEND file, then fsync; so a
kill -9 leaves at most one torn last line, which the next start truncates. The next start also
reads every prompt id already in the data and rejects files and skips them: a rerun with the same
arguments finishes the remaining prompts, with no duplicates and nothing lost. `n` is the total
wanted in the directory, not "n more". A lock file keeps two runs from writing the same directory.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from datetime import datetime, timezone
from pathlib import Path

from primer.common.files import DirLock
from primer.common.jsonl import BadInput, JsonlAppender, read_jsonl
from primer.common.provenance import package_versions
from primer.config import Count, Fraction, Positive, PositiveFraction, check_config, to_dict
from primer.errors import PrimerError
from primer.synth import convo, grid, quality, verify
from primer.synth.quality import QualityRules
from primer.teachers import HttpOptions

SHARD = "data-{:05d}.jsonl"


@dataclass
class SynthConfig(HttpOptions):
    """`primer synth`: write textbook-style documents with a teacher over the prompt grid
    (the HTTP teacher's options, `HttpOptions`, are fields of it too)."""

    kind: Literal["documents", "conversations", "preference"] = "documents"
    """documents: textbook-style texts over the topic grid; conversations: chats made from --sources for `primer tune
    sft`; preference: on-policy answers of --policy ranked into {prompt, chosen, rejected} pairs for `primer tune dpo`"""
    sources: list[Path] = field(default_factory=list)
    """conversations / preference: JSONL documents ("text" field; synth or curate output, or any corpus) to turn into
    chats, or (preference) into constrained-rewrite prompts"""
    policy: str = "bundled"
    """preference: the model being tuned, which samples the candidate answers ('bundled', .gguf, HF dir, checkpoint)"""
    samples: int = 4
    """preference: answers sampled per prompt"""
    prompts: list[Path] = field(default_factory=list)
    """preference: JSONL prompts {"prompt", optional "answer" (a number), "constraint" (a conversation constraint) or
    "instruction_id_list" + "kwargs" (IFEval's form, checked by its checkers)}"""
    instructions: int = 0
    """preference: prompts drawn over the topic grid with 1-3 of IFEval's instruction kinds each, ranked by IFEval's
    checkers (needs the ifeval extra; the base tasks are decontaminated against IFEval's prompts)"""
    safety_per_type: int = 0
    """preference: safety prompts the teacher writes per XSTest-like prompt type (decontaminated against XSTest)"""
    data_dir: Path | None = None
    """preference: benchmark folder holding xstest/ and ifeval/ (default: $PRIMER_DATA or ../shared/benchmarks)"""
    out: Path = Path("runs/synth")
    """output directory (shards, rejects, summary); rerunning on it resumes"""
    n: int = 100
    """documents wanted in --out in total; a rerun finishes what is missing (0: none, e.g. a web-only
    `primer run`, recipes/ablation-web.toml)"""
    teacher: str = "bundled"
    """'bundled' (SmolLM2-135M-Instruct in-process), a .gguf file, or an OpenAI-compatible base URL"""
    model: str | None = None
    """model name to request from an HTTP teacher"""
    topics: Path | None = None
    """topic file (JSONL from `primer topics`, a YAML tree, or one topic per line); default: the shipped tree"""
    subjects: list[str] = field(default_factory=list)
    """only topics of these subjects (comma-separated); default all"""
    formats: list[str] = field(default_factory=list)
    """formats to use (documents: textbook, exercises (word problems, checked), story, dialogue, code (exercises,
    checked); conversations: qa, exercise,
    followup, constrained); default all"""
    audiences: list[str] = field(default_factory=list)
    """audiences (young_children, middle_school, high_school, college, researchers); default all"""
    seed_corpus: Path | None = None
    """JSONL ('text' field) or text file of web documents whose extracts seed the prompts (Cosmopedia-style)"""
    seed: int = 0
    """grid order and sampling seed"""
    max_tokens: Count = 512
    """most tokens per document"""
    temperature: float = 0.8
    """teacher sampling temperature"""
    top_p: PositiveFraction = 0.95
    """teacher nucleus sampling mass"""
    repeat_penalty: Positive = 1.1
    """repetition penalty where the teacher supports it (1.0 = off)"""
    batch_size: Count = 8
    """prompts per batch for the in-process teacher"""
    threads: Count | None = None
    """CPU threads for an in-process teacher (default: the backend's choice)"""
    device: str = "cpu"
    """device for the in-process teacher and for the preference kind's policy (cpu, cuda)"""
    min_words: int = 50
    """reject documents with fewer words"""
    reject_truncated: bool = False
    """reject documents that hit --max-tokens"""
    max_repeat_frac: Fraction = 0.3
    """reject documents where more than this share of words sit in repeated 5-grams"""
    shard_docs: Count = 10000
    """documents per output shard"""
    fsync: bool = True
    """fsync the output files (a kill -9 loses nothing either way: this is for power cuts and OS crashes)"""
    fsync_interval: float = 0.0
    """seconds between fsyncs; 0 = after every document. At hundreds of docs/s (a big server) 1.0
    removes the fsync bottleneck and a power cut can cost at most that much work, which a rerun redoes"""
    stats_sample: Count = 20000
    """documents used for the near-duplicate and distinct-n-gram figures"""
    progress: bool = True
    """show a progress bar"""
    verify_timeout: Positive = 5.0
    """seconds a checked document's program (its tests, or its solution()) may run in the sandbox"""
    unsafe_code: bool = False
    """check exercises without isolation where this machine has none (resource limits only; the teacher's
    code can then reach the network and your files)"""
    strict: bool = False
    """stop at the first malformed line of --topics / --seed-corpus (naming file and line) instead of
    counting and naming it in the summary"""


@dataclass
class SynthRunStats:
    """What one invocation did (a resumed job reports only its own share here)."""

    seconds: float
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float | None
    docs_per_hour: float | None
    finish_reasons: dict[str, int]
    rejects: dict[str, int]
    teacher_retries: int
    verify_seconds: float = 0.0
    """time the run waited for sandbox checks after the teacher had finished a wave"""


@dataclass
class SynthResult:
    """What `synth` returns and saves as summary.json: the output directory's totals, this run's
    share, and the corpus-level quality figures."""

    out: str
    teacher: str
    documents: int
    target: int
    grid_exhausted: bool
    """the prompt grid ran out before `target` documents (widen topics/formats/audiences)"""
    documents_this_run: int
    completion_tokens_total: int
    this_run: SynthRunStats
    rejects_total: dict[str, int]
    reject_rate: float
    verification: dict[str, dict[str, int]]
    """format -> verification status (verified, failed, timeout, unverifiable) -> documents, over the directory"""
    near_dup_rate: float | None
    """share of documents with an earlier near-duplicate (MinHash J >= near_dup_threshold); None without datasketch"""
    near_dups: int
    near_dup_threshold: float
    stats_docs: int
    """documents the near-duplicate and distinct-n-gram figures were computed on"""
    distinct_2gram_ratio: float
    distinct_3gram_ratio: float
    bad_input: BadInput
    """malformed lines of the topics file or seed corpus, named"""


class Store:
    """The output directory: sharded documents + rejects, and what is already done."""

    def __init__(self, out: Path, shard_docs: int = 10000, fsync: bool = True, interval: float = 0.0) -> None:
        self.out = Path(out)
        self.shard_docs = shard_docs
        self.fsync = fsync
        self.interval = interval
        self.done: set[str] = set()
        self.n_docs = 0
        self.tokens = 0
        self.verified: dict[str, Counter] = {}
        """format -> verification status -> documents (kept and rejected)"""
        self.shards = sorted(self.out.glob("data-*.jsonl"))
        last_count = 0
        for shard in self.shards:
            last_count = 0
            for rec in read_jsonl(shard, strict=True, repair=True):
                self.done.add(rec["prompt_id"])
                self.n_docs += 1
                self.tokens += int(rec.get("completion_tokens") or 0)
                self.count_verification(rec)
                last_count += 1
        self.rejects_before: Counter = Counter()
        rejects = self.out / "rejects.jsonl"
        for rec in (read_jsonl(rejects, strict=True, repair=True) if rejects.exists() else ()):
            self.done.add(rec["prompt_id"])
            self.rejects_before[rec.get("reason", "?")] += 1
            self.count_verification(rec)
        self._shard_index = len(self.shards) - 1 if self.shards else 0
        self._in_shard = last_count
        self._data: JsonlAppender | None = None
        self._rejects = JsonlAppender(self.out / "rejects.jsonl", fsync, interval)

    def _data_file(self) -> JsonlAppender:
        if self._data is None or self._in_shard >= self.shard_docs:
            if self._data is not None:
                self._data.close()
                self._shard_index += 1
                self._in_shard = 0
            elif self._in_shard >= self.shard_docs:
                self._shard_index += 1
                self._in_shard = 0
            self._data = JsonlAppender(self.out / SHARD.format(self._shard_index), self.fsync, self.interval)
        return self._data

    def count_verification(self, rec: dict) -> None:
        if rec.get("verification"):
            self.verified.setdefault(rec.get("format") or "?", Counter())[rec["verification"]["status"]] += 1

    def add(self, doc: dict) -> None:
        self._data_file().write(doc)
        self._in_shard += 1
        self.n_docs += 1
        self.tokens += int(doc.get("completion_tokens") or 0)
        self.done.add(doc["prompt_id"])
        self.count_verification(doc)

    def reject(self, rec: dict) -> None:
        self._rejects.write(rec)
        self.done.add(rec["prompt_id"])
        self.count_verification(rec)

    def iter_docs(self) -> Iterator[dict]:
        for shard in sorted(self.out.glob("data-*.jsonl")):
            yield from read_jsonl(shard, strict=True)

    def close(self) -> None:
        if self._data is not None:
            self._data.close()
        self._rejects.close()


# ---------------------------------------------------------------------------- the run


def build_plan(cfg: SynthConfig, bad: BadInput | None = None) -> Iterator[grid.PromptSpec | convo.ChatSpec]:
    """The prompt sequence for `cfg` (the same on every rerun); unreadable input lines go to `bad`."""
    from primer.synth import topics as topics_mod

    if cfg.kind == "conversations":
        if not cfg.sources:
            raise PrimerError("conversations are made from documents; pass --sources FILE.jsonl[,FILE...]")
        return convo.plan(convo.read_sources(list(cfg.sources), bad=bad), cfg.formats or None, cfg.seed)

    extracts = grid.read_extracts(cfg.seed_corpus, bad=bad, strict=cfg.strict) if cfg.seed_corpus else []
    topic_list = [] if extracts else topics_mod.select(cfg.topics, cfg.subjects, bad, cfg.strict)
    return grid.plan(topic_list, extracts, cfg.formats or None, cfg.audiences or None, cfg.seed)


def make_teacher(cfg: SynthConfig):
    from primer.teachers import load_teacher

    opts = HttpOptions(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(HttpOptions)})
    return load_teacher(cfg.teacher, cfg.model, options=opts, batch_size=cfg.batch_size, n_threads=cfg.threads,
                        device=cfg.device)


def _doc(spec, comp, teacher_name: str, sampling) -> dict:
    if isinstance(spec, convo.ChatSpec):
        return {"text": comp.text.strip(), "prompt_id": spec.id, "prompt": spec.text, "kind": "conversation",
                "format": spec.format, "constraint": spec.constraint,
                "source": {"id": spec.source.id, "where": spec.source.where},
                "teacher": teacher_name, "sampling": sampling.to_dict(), "prompt_tokens": comp.prompt_tokens,
                "completion_tokens": comp.completion_tokens, "finish_reason": comp.finish_reason,
                "seconds": round(comp.seconds, 3), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return {
        "text": comp.text.strip(),
        "prompt_id": spec.id,
        "prompt": spec.text,
        "topic": spec.topic.name if spec.topic else None,
        "subject": spec.topic.subject if spec.topic else None,
        "area": spec.topic.area if spec.topic else None,
        "format": spec.format,
        "audience": spec.audience,
        "style": dict(spec.style),
        "seed_extract": {"id": spec.extract.id, "source": spec.extract.source} if spec.extract else None,
        "teacher": teacher_name,
        "sampling": sampling.to_dict(),
        "prompt_tokens": comp.prompt_tokens,
        "completion_tokens": comp.completion_tokens,
        "finish_reason": comp.finish_reason,
        "seconds": round(comp.seconds, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def synth(cfg: SynthConfig, teacher=None, policy=None) -> SynthResult:
    """Run (or resume) a synth job; returns the summary (also saved as summary.json)."""
    from tqdm import tqdm

    from primer.teachers import Sampling

    check_config(cfg)
    out = Path(cfg.out)
    rules = QualityRules(min_words=cfg.min_words, reject_truncated=cfg.reject_truncated,
                         max_repeat_frac=cfg.max_repeat_frac)
    base = Sampling(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                    repeat_penalty=cfg.repeat_penalty)
    with DirLock(out, "primer synth"):
        store = Store(out, cfg.shard_docs, cfg.fsync, cfg.fsync_interval)
        bad = BadInput()
        plan_it = ((p for p in build_plan(cfg, bad) if p.id not in store.done) if cfg.kind != "preference"
                   else iter(()))
        if bad.count:
            print(f"synth: {bad.describe()}", file=sys.stderr)
        checks = cfg.kind == "documents" and any(verify.check_of(f) for f in cfg.formats or grid.FORMATS)
        # before the teacher loads: a machine without isolation is refused at once, saying what to do
        verifier = verify.Verifier(cfg.verify_timeout, unsafe=cfg.unsafe_code) if checks and store.n_docs < cfg.n \
            else None
        own = teacher is None
        if own and store.n_docs < cfg.n:
            teacher = make_teacher(cfg)
        tname = teacher.name if teacher is not None else "(none needed)"
        with JsonlAppender(out / "runs.jsonl") as runs:
            runs.write({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "config": to_dict(cfg), "teacher": tname, "argv": sys.argv,
                        "docs_before": store.n_docs, "versions": package_versions()})
        rejects: Counter = Counter()
        finish: Counter = Counter()
        new_docs = prompt_tok = gen_tok = asked = 0
        exhausted = False
        verify_wait = 0.0
        t0 = time.perf_counter()
        bar = tqdm(total=cfg.n, initial=min(store.n_docs, cfg.n), unit="doc", desc="synth",
                   disable=not cfg.progress, dynamic_ncols=True)

        def settle(doc: dict, reason: str | None) -> None:
            nonlocal new_docs
            if store.n_docs >= cfg.n:
                return  # the rest of a wave past the n-th document stays pending (a rerun with a larger n asks again)
            if reason:
                doc["reason"] = reason
                store.reject(doc)
                rejects[reason] += 1
            else:
                store.add(doc)
                new_docs += 1
                bar.update(1)

        def settle_checked(wait: bool) -> None:
            for doc, verdict in (verifier.ready(wait) if verifier else ()):
                doc["verification"] = verdict
                settle(doc, verify.REJECT_REASON.get(verdict["status"]))

        try:
            if cfg.kind == "preference" and store.n_docs < cfg.n:
                from primer.synth import prefs
                from primer.weights.load import load_model

                # it only samples answers: the packed decoder on a CPU, the model itself on a GPU
                policy = policy or load_model(cfg.policy, device=cfg.device, decode_only=True)
                new_docs, prompt_tok, gen_tok = prefs.run_preference(cfg, store, teacher, policy, rejects, bad,
                                                                     bar.update)
                exhausted = store.n_docs < cfg.n
                if bad.count:
                    rejects["bad_input"] += bad.count
            while cfg.kind != "preference" and store.n_docs < cfg.n:
                # twice the prompts this run's keep rate says the rest needs, up to a batch: with a low-yield
                # teacher the last few documents would otherwise be decoded a handful of rows at a time, one
                # short wave after another (a CPU decodes 32 rows in ~8x the time of 1, for 32x the tokens);
                # what comes after the n-th keeper stays pending
                need = cfg.n - store.n_docs
                rate = max(new_docs / asked if asked else 1.0, 1 / cfg.batch_size)
                size = need if rate >= 1 else max(need, min(cfg.batch_size, math.ceil(2 * need / rate)))
                wave = list(itertools.islice(plan_it, size))
                asked += len(wave)
                if not wave:
                    exhausted = True
                    break
                items = ((spec, spec.text, base.with_seed(spec.seed(cfg.seed))) for spec in wave)
                for spec, comp in teacher.imap(items, base):
                    samp = base.with_seed(spec.seed(cfg.seed))
                    doc = _doc(spec, comp, tname, samp)
                    prompt_tok += comp.prompt_tokens
                    gen_tok += comp.completion_tokens
                    finish[comp.finish_reason] += 1
                    reason = quality.check(comp.text, comp.finish_reason, rules, comp.error)
                    if not reason and isinstance(spec, convo.ChatSpec):
                        doc["messages"], reason = convo.parse(spec, comp.text)
                        if doc["messages"]:  # curate reads "text": every turn, so decontamination sees the prompts too
                            doc["text"] = "\n\n".join(m["content"] for m in doc["messages"])
                    if reason and comp.error:
                        doc["error"] = comp.error
                    if not reason and verifier and isinstance(spec, grid.PromptSpec) and verify.check_of(spec.format):
                        verifier.submit(doc, spec.format, comp.text)  # settled when its sandbox run ends
                    else:
                        settle(doc, reason)
                    settle_checked(wait=False)
                    dt = time.perf_counter() - t0
                    bar.set_postfix(tok_s=f"{gen_tok / dt:.1f}" if dt else "-", rejects=sum(rejects.values()),
                                    refresh=False)
                tw = time.perf_counter()
                settle_checked(wait=True)  # the wave's last checks, so the next wave's size is right
                verify_wait += time.perf_counter() - tw
        finally:
            bar.close()
            if verifier:  # an unfinished check is not written: a rerun redoes its prompt
                verifier.close()
            store.close()
            if own and teacher is not None:
                teacher.close()
        seconds = time.perf_counter() - t0
        run = SynthRunStats(
            seconds=round(seconds, 2), prompt_tokens=prompt_tok, completion_tokens=gen_tok,
            tokens_per_s=round(gen_tok / seconds, 2) if seconds > 0 else None,
            docs_per_hour=round(new_docs / seconds * 3600, 1) if seconds > 0 else None,
            finish_reasons=dict(finish), rejects=dict(rejects), teacher_retries=getattr(teacher, "retried", 0),
            verify_seconds=round(verify_wait, 2))
        summary = summarize(store, cfg, run, new_docs, tname, exhausted, bad)
        (out / "summary.json").write_text(json.dumps(to_dict(summary), indent=2) + "\n")
        return summary


def summarize(store: Store, cfg: SynthConfig, run: SynthRunStats, new_docs: int, teacher: str, exhausted: bool,
              bad: BadInput) -> SynthResult:
    texts = [d["text"] for d in itertools.islice(store.iter_docs(), cfg.stats_sample)]
    rate, ndup = quality.near_dup_rate(texts)
    all_rejects = store.rejects_before + Counter(run.rejects)
    return SynthResult(
        out=str(store.out), teacher=teacher, documents=store.n_docs, target=cfg.n, grid_exhausted=exhausted,
        documents_this_run=new_docs, completion_tokens_total=store.tokens, this_run=run,
        rejects_total=dict(all_rejects),
        reject_rate=round(sum(all_rejects.values()) / max(1, sum(all_rejects.values()) + store.n_docs), 4),
        verification={f: dict(c) for f, c in sorted(store.verified.items())},
        near_dup_rate=round(rate, 4) if rate is not None else None, near_dups=ndup, near_dup_threshold=0.8,
        stats_docs=len(texts),
        distinct_2gram_ratio=round(quality.distinct_ngram_ratio(texts, 2), 4),
        distinct_3gram_ratio=round(quality.distinct_ngram_ratio(texts, 3), 4),
        bad_input=bad,
    )


def format_summary(s: SynthResult) -> str:
    r = s.this_run
    rej = ", ".join(f"{k} {v}" for k, v in sorted(s.rejects_total.items())) or "none"
    lines = [
        f"documents: {s.documents} / {s.target} ({s.documents_this_run} new this run)"
        + ("  [prompts exhausted: widen topics/formats/audiences (preference: more --instructions, --prompts or "
           "--sources)]" if s.grid_exhausted else ""),
        f"tokens: {r.completion_tokens} generated this run in {r.seconds} s "
        f"({r.tokens_per_s} tok/s, {r.docs_per_hour} docs/h); {s.completion_tokens_total} in all docs",
        f"rejects: {rej} (rate {s.reject_rate:.1%}); teacher requests retried this run: {r.teacher_retries}",
        *(f"verified {f}: {c.get('verified', 0)} of {sum(c.values())} ("
          + (", ".join(f"{k} {c[k]}" for k in verify.STATUSES[1:] if c.get(k)) or "none rejected") + ")"
          for f, c in s.verification.items()),
        f"waited {r.verify_seconds} s for sandbox checks after the teacher" if r.verify_seconds >= 0.05 else "",
        (f"near-duplicates (MinHash J>=0.8): {s.near_dup_rate:.2%} ({s.near_dups} of {s.stats_docs}); "
         if s.near_dup_rate is not None else "near-duplicates: n/a (pip install datasketch); ")
        + f"distinct 2/3-grams: {s.distinct_2gram_ratio:.3f} / {s.distinct_3gram_ratio:.3f}",
        f"bad input: {s.bad_input.describe('bad line')}" if s.bad_input.count else "",
        (f"cut short (finish_reason=length: --max-tokens or the teacher's context): {r.finish_reasons['length']} of "
         f"{sum(r.finish_reasons.values())} completions this run (--reject-truncated drops them)")
        if r.finish_reasons.get("length") else "",
        f"written to {s.out} (summary.json)",
    ]
    return "\n".join(line for line in lines if line)
