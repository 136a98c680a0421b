"""The `[tune]` stage: a model made into a chat model the phi-3 way, evaluated before and after.

Steps (each resumable: rerunning the stage continues where it stopped; each keeps a fingerprint of its settings
and of its inputs' bytes in steps.json, so a change starts over only the steps it touches -- a new dpo_steps
keeps the teacher's data and the SFT, a new sft_lr keeps the data):
  1. conversations: the teacher turns the curated documents into chat data (`primer synth --kind conversations`);
  2. preference pairs: on-policy samples of the model being tuned, ranked by the verifiers, plus safety pairs
     written from XSTest-like prompt *types* (`primer synth --kind preference`, decontaminated against XSTest);
  3. SFT of the model on (1) and on safety demonstrations from (2) (phi-3 put its safety data in both SFT and
     DPO), then DPO from its last checkpoint on (2) (`primer tune sft` / `dpo`);
  (with `rounds` > 1, steps 2-3 again from the last round's tuned model: its own samples of new prompts, SFT on its
  verified replies and safety demonstrations, DPO on its pairs, into pairs-R/, sft-R/, dpo-R/)
  4. eval of the model before and after on the same items: IFEval (the four numbers, and the prompt-level loose
     difference with a paired bootstrap interval), XSTest (unsafe compliance, safe refusal) and multiple-choice
     tasks (ARC-Easy, PIQA) to show nothing was broken.

Off in the default recipe (SFT + DPO of the 135M model and its evals do not fit its ~12-minute budget on 2
cores); on in recipes/chat.toml. `bench/chat.py` runs the same steps outside a run directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from primer.common.files import atomic_write_bytes, atomic_write_json
from primer.config import Count, Positive
from primer.errors import PrimerError
from primer.pipeline.summaries import Curve, TuneRound, TuneRow, TuneSummary

IFEVAL_METRICS = ("prompt_level_loose_acc", "prompt_level_strict_acc", "inst_level_loose_acc", "inst_level_strict_acc")
XSTEST_METRICS = ("compliance_rate,unsafe", "refusal_rate,safe")


@dataclass
class ChatTuneConfig:
    enabled: bool = False
    """Run the stage (off by default: it takes tens of minutes on 2 cores; recipes/chat.toml turns it on)."""
    model: str = "bundled"
    """The model to tune: 'bundled' (SmolLM2-135M-Instruct), a .gguf, an HF dir or a primer checkpoint."""
    teacher: str = "bundled"
    """Writes the conversations and judges where no verifier exists ('bundled', a .gguf or an HTTP endpoint)."""
    sft_data: list[Path] = field(default_factory=list)
    """Your own conversations (OpenAI `messages` JSONL...): used instead of teacher-made ones (steps 1 skipped)."""
    pairs_data: list[Path] = field(default_factory=list)
    """Your own preference pairs ({prompt, chosen, rejected} JSONL): used instead of sampled ones (step 2 skipped)."""
    conversations: int = 200
    """conversations the teacher writes from the curated documents (0: none; the SFT data is then the verified
    replies and safety demonstrations of the pairs' samples)"""
    pairs: Count = 100
    """preference pairs from on-policy samples"""
    safety_per_type: int = 4
    """safety preference pairs per XSTest-like prompt type (0: none)"""
    safety_sft: bool = True
    """safety demonstrations (refuse the unsafe prompt, answer its safe look-alike: `safety_conversations`) also join
    the SFT data, no more refusals than answers: a few DPO steps at a small learning rate do not undo what SFT on
    helpful answers teaches, and refusals alone teach the model to refuse whatever sounds unsafe"""
    rounds: Count = 1
    """on-policy rounds (Llama 2/3 iterate rejection sampling and DPO this way). Round r > 1 starts from round
    r - 1's tuned model: it samples `pairs` more pairs from that model (another seed: new instruction prompts and
    safety questions; the constrained rewrites of the same documents), SFT on that round's verified replies and safety
    demonstrations (the teacher's conversations are round one's), then DPO on its pairs; eval compares the first
    model with the last round's"""
    sft_epochs: Positive | None = None
    """SFT passes over each round's data instead of sft_steps (how many verified replies a round keeps is known only
    once its samples are scored)"""
    dpo_epochs: Positive | None = None
    """DPO passes over each round's pairs instead of dpo_steps"""
    verified_sft: bool = False
    """rejection sampling: the on-policy samples that passed every check of their verifier and ended by themselves
    (IFEval's checkers on instruction prompts, the constraint checks of rewrites) also join the SFT data, one reply
    per prompt (`verified_conversations`); safety prompts go by safety_sft"""
    instructions: int = 0
    """preference prompts drawn over the topic grid with IFEval's instruction kinds, ranked by its checkers (0: none;
    the pairs then come from the teacher's constrained rewrites and safety prompts only)"""
    samples: Count = 4
    """on-policy answers sampled per preference prompt"""
    synth_tokens: Count = 256
    """most tokens per teacher or policy answer"""
    synth_batch: Count = 32
    """answers the in-process teacher and the policy decode together (a CPU gives ~4x the tokens/s at 32 as at 4)"""
    sft_steps: Count = 60
    dpo_steps: Count = 40
    batch_size: Count = 8
    micro_batch: Count | None = None
    """examples per forward/backward, conversations in SFT and pairs in DPO (None: the whole batch at once). The
    activations kept for backward grow with it: the chat recipe's DPO (8 pairs a step) peaks at 17.2 GB RSS whole
    and 7.0 GB with 2, the same loss; the step's gradient is the same, accumulated"""
    max_seq_len: Count = 768
    save_every: int = 20
    """a checkpoint every N SFT/DPO steps (and at the end; the newest only is kept), so a killed stage resumes from
    it: a round of the two-round recipe trains for 20-30 minutes on 2 cores"""
    sft_lr: Positive = 2e-5
    dpo_lr: Positive = 5e-7
    beta: Positive = 0.1
    ifeval_limit: Count | None = 100
    """IFEval prompts scored before and after (None: all 541)"""
    xstest_limit: Count | None = None
    """XSTest prompts (None: all 450)"""
    mc_tasks: list[str] = field(default_factory=lambda: ["arc_easy", "piqa"])
    """multiple-choice tasks scored before and after, to show nothing was broken"""
    mc_limit: Count = 100
    max_gen_tokens: Count | None = 256
    """most new tokens per IFEval answer"""
    data_dir: Path | None = None
    """benchmark folder (default: the lookup every stage uses)"""


def _files(d: Path) -> list[str]:
    return [str(p) for p in sorted(d.glob("data-*.jsonl"))]


def _curve(rows: list[dict], key: str) -> Curve:
    pts = [(int(r["step"]), float(r[key])) for r in rows if "step" in r and isinstance(r.get(key), (int, float))]
    return Curve([p[0] for p in pts], [p[1] for p in pts])


def run_chat_tune(cfg: ChatTuneConfig, sources: list[str], out: Path, log: Callable[[str], None],
                  device: str = "cpu", rel: Callable[[Path], str] = str) -> TuneSummary:
    """Steps 1-4 of the module docstring into `out`; the summary the report shows."""
    from primer.common.jsonl import count_records
    from primer.eval.lm import PrimerLM
    from primer.eval.runner import EvalConfig, evaluate
    from primer.synth.run import SynthConfig, synth
    from primer.train.checkpoints import latest_checkpoint
    from primer.train.metrics import read_metrics
    from primer.tune import DPOConfig, SFTConfig, dpo, sft

    if cfg.data_dir is None or not all((Path(cfg.data_dir) / t).is_dir() for t in ("ifeval", "xstest")):
        raise PrimerError(f"[tune] needs benchmark data with ifeval/ and xstest/ (found: {cfg.data_dir}) for its "
                          "before/after evals and the XSTest decontamination of its safety pairs: set PRIMER_DATA, "
                          "[tune] data_dir, or fetch them with `primer data pull ifeval,xstest`")
    if cfg.rounds > 1 and not (cfg.instructions or cfg.safety_per_type or sources):
        raise PrimerError(f"[tune] rounds = {cfg.rounds}: a later round samples new pairs from the tuned model, "
                          "and has no prompts to sample (no instructions, no safety_per_type, no curated documents): "
                          "set [tune] instructions, or run the synth and curate stages without [tune] "
                          "sft_data/pairs_data")
    times: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        times[name] = round(time.perf_counter() - t0 - sum(times.values()), 1)

    steps = Steps(out, log)
    common = dict(teacher=cfg.teacher, device=device, max_tokens=cfg.synth_tokens, batch_size=cfg.synth_batch,
                  fsync=False, min_words=8, progress=False)
    srcs = [Path(s) for s in sources]
    if cfg.sft_data:
        conv_files, n_conv = [str(p) for p in cfg.sft_data], sum(count_records(p) for p in cfg.sft_data)
    elif not cfg.conversations:
        conv_files, n_conv = [], 0
    else:
        log(f"  tune: {cfg.conversations} conversations from {len(srcs)} curated file(s)")
        steps.enter("conversations", teacher=cfg.teacher, sources=digest(srcs), n=cfg.conversations,
                    tokens=cfg.synth_tokens, batch=cfg.synth_batch)
        n_conv = synth(SynthConfig(kind="conversations", sources=srcs, out=out / "conversations",
                                   n=cfg.conversations, **common)).documents
        conv_files = _files(out / "conversations")
    if cfg.conversations and not conv_files:
        raise PrimerError(f"[tune] the teacher kept no conversations (see {out}/conversations/rejects.jsonl): raise "
                          "[tune] conversations or give your own with [tune] sft_data")
    loop = dict(batch_size=cfg.batch_size, micro_batch_size=cfg.micro_batch, device=device,
                max_seq_len=cfg.max_seq_len, progress=False)
    ckpt = dict(save_every=cfg.save_every, keep_checkpoints=1)  # not in the fingerprints: they do not change a model
    policy, policy_fp = cfg.model, cfg.model  # the model a round starts from, and what names it in fingerprints
    rounds: list[TuneRound] = []
    sft_rows, dpo_rows = [], []
    for r in range(1, cfg.rounds + 1):
        # round one's files keep the names they had before rounds existed, so an earlier run resumes
        tag = "" if r == 1 else f"-{r}"
        pairs_dir, sft_dir, dpo_dir = (out / (name + tag) for name in ("pairs", "sft", "dpo"))
        if r == 1 and cfg.pairs_data:
            pair_files = [str(p) for p in cfg.pairs_data]
            n_pairs = sum(count_records(p) for p in cfg.pairs_data)
            rejects = []
        else:
            who = cfg.model if r == 1 else f"round {r - 1}'s model"
            log(f"  tune: round {r}: {cfg.pairs} preference pairs sampled from {who} "
                f"(+ {cfg.safety_per_type} safety per type)")
            steps.enter("pairs" + tag, teacher=cfg.teacher, policy=policy_fp, sources=digest(srcs), n=cfg.pairs,
                        samples=cfg.samples, safety_per_type=cfg.safety_per_type, tokens=cfg.synth_tokens,
                        batch=cfg.synth_batch, data_dir=str(cfg.data_dir),
                        # only when set, so a run made before the setting existed keeps its pairs
                        **({"instructions": cfg.instructions} if cfg.instructions else {}))
            # new instruction prompts (drawn by (seed, k)) and safety questions (teacher seeds seed + k, k below
            # safety_per_type) each round, none of an earlier round's; without safety prompts the seed is r - 1,
            # as `primer synth --seed` was in the README's commands
            seed = (r - 1) * max(1, cfg.safety_per_type)
            n_pairs = synth(SynthConfig(kind="preference", sources=srcs, out=pairs_dir, n=cfg.pairs,
                                        policy=policy, samples=cfg.samples, safety_per_type=cfg.safety_per_type,
                                        instructions=cfg.instructions, seed=seed,
                                        data_dir=Path(cfg.data_dir), **common)).documents
            pair_files = _files(pairs_dir)
            rejects = [pairs_dir / "rejects.jsonl"]
        if not pair_files:
            raise PrimerError(f"[tune] round {r} kept no preference pairs (see {pairs_dir}/rejects.jsonl): "
                              "raise [tune] pairs, or give your own with [tune] pairs_data")
        sft_files = list(conv_files) if r == 1 else []  # the teacher's conversations are round one's
        added = {"safety-sft": 0, "verified-sft": 0}  # SFT data made from the pairs' samples
        for on, make, name, what in ((cfg.safety_sft, safety_conversations, "safety-sft", "safety demonstrations"),
                                     (cfg.verified_sft, verified_conversations, "verified-sft",
                                      "verified on-policy replies")):
            if on:
                n = make(pair_files, out / f"{name}{tag}.jsonl", rejects)
                log(f"  tune: round {r}: {n} {what} join the SFT data")
                added[name] = n
                sft_files += [str(out / f"{name}{tag}.jsonl")] if n else []
        lap("data" + tag)
        start, start_fp, new_sft = policy, policy_fp, []  # DPO's starting model, unless SFT runs
        if sft_files:
            log(f"  tune: round {r}: SFT {_length(cfg.sft_steps, cfg.sft_epochs)}")
            sft_fp = steps.enter("sft" + tag, model=policy_fp, data=digest(sft_files), steps=cfg.sft_steps,
                                 lr=cfg.sft_lr, **_epochs(cfg.sft_epochs), **loop)
            sft(SFTConfig(model=policy, data=sft_files, out_dir=str(sft_dir), max_steps=cfg.sft_steps,
                          epochs=cfg.sft_epochs, lr=cfg.sft_lr, warmup_steps=_warmup(cfg.sft_steps, cfg.sft_epochs),
                          **ckpt, **loop))
            start, start_fp = str(latest_checkpoint(sft_dir)), sft_fp
            new_sft = _continued(read_metrics(sft_dir / "metrics.jsonl"), sft_rows)
        else:  # no conversations, and the round's samples gave no verified reply and no safety demonstration
            log(f"  tune: round {r}: no SFT data (no conversations, verified reply or safety demonstration): DPO only")
        log(f"  tune: round {r}: DPO {_length(cfg.dpo_steps, cfg.dpo_epochs)}")
        dpo_fp = steps.enter("dpo" + tag, sft=start_fp, data=digest(pair_files), steps=cfg.dpo_steps, lr=cfg.dpo_lr,
                             beta=cfg.beta, **_epochs(cfg.dpo_epochs), **loop)
        dpo(DPOConfig(model=start, data=pair_files, out_dir=str(dpo_dir), max_steps=cfg.dpo_steps,
                      epochs=cfg.dpo_epochs, lr=cfg.dpo_lr, beta=cfg.beta, **ckpt, **loop))
        new_dpo = _continued(read_metrics(dpo_dir / "metrics.jsonl"), dpo_rows)
        rounds.append(TuneRound(pairs=n_pairs, safety_sft=added["safety-sft"], verified_sft=added["verified-sft"],
                                sft_steps=_steps(new_sft), dpo_steps=_steps(new_dpo)))
        sft_rows, dpo_rows = sft_rows + new_sft, dpo_rows + new_dpo
        policy, policy_fp = str(latest_checkpoint(dpo_dir)), dpo_fp
        lap("tune" + tag)
    tuned = Path(policy)

    cache = out / "eval-cache.sqlite"
    results = {}
    for who, spec in (("before", cfg.model), ("after", str(tuned))):
        log(f"  tune: eval {who} ({who == 'before' and spec or 'the tuned model'})")
        lm = PrimerLM.load(spec, batch_size=32, device=device)

        def ev(tasks, limit, max_gen=None, lm=lm):
            return evaluate(lm, EvalConfig(tasks=tasks, limit=limit, data_dir=Path(cfg.data_dir), log_samples=True,
                                           max_gen_tokens=max_gen, cache=cache), progress=False)

        # XSTest's string-match rule reads a reply's first words: 16 greedy tokens give the verdicts 256 would
        results[who] = {"ifeval": ev(["ifeval"], cfg.ifeval_limit, cfg.max_gen_tokens),
                        "xstest": ev(["xstest"], cfg.xstest_limit, 16),
                        "mc": ev(list(cfg.mc_tasks), cfg.mc_limit) if cfg.mc_tasks else None}
    lap("eval")

    rows = []
    for key, task, metrics in (("ifeval", "ifeval", IFEVAL_METRICS), ("xstest", "xstest", XSTEST_METRICS)):
        rows += [_row(results["before"][key], results["after"][key], task, m) for m in metrics]
    for task in cfg.mc_tasks:
        rows.append(_row(results["before"]["mc"], results["after"]["mc"], task,
                         results["before"]["mc"].tasks[task].primary))
    return TuneSummary(skipped=None, model=cfg.model, conversations=n_conv, pairs=sum(r.pairs for r in rounds),
                       sft_curve=_curve(sft_rows, "loss"), dpo_curve=_curve(dpo_rows, "loss"),
                       dpo_margin=_curve(dpo_rows, "reward_margin"), rows=rows, checkpoint=rel(tuned), seconds=times,
                       safety_sft=sum(r.safety_sft for r in rounds),
                       verified_sft=sum(r.verified_sft for r in rounds), rounds=rounds)


def _length(steps: int, epochs: float | None) -> str:
    return f"{epochs:g} epochs" if epochs else f"{steps} steps"


def _epochs(epochs: float | None) -> dict:
    return {"epochs": epochs} if epochs else {}  # only when set, so a run made before it existed keeps its steps


def _warmup(steps: int, epochs: float | None) -> int:
    return 5 if epochs else min(5, steps - 1)  # SFT's; DPO starts at its learning rate (TRL's default)


def _steps(rows: list[dict]) -> int:
    return sum(1 for r in rows if "step" in r)


def _continued(rows: list[dict], before: list[dict]) -> list[dict]:
    """A round's metric lines with their steps counted on from the rounds before (one curve over all rounds)."""
    last = max((int(r["step"]) for r in before if "step" in r), default=0)
    return [{**r, "step": int(r["step"]) + last} if "step" in r else r for r in rows]


def digest(files) -> str:
    """One fingerprint of the files' bytes, in order (what a step read, whatever its path or mtime)."""
    from primer.common.files import sha256_file

    return hashlib.sha256(" ".join(sha256_file(f) for f in files).encode()).hexdigest()[:16]


class Steps:
    """The fingerprint of each step's settings in out/steps.json. A step whose fingerprint changed starts over from
    an empty directory (out/<step>); one whose did not keeps its files and resumes from them. A step's settings
    name what it reads (the digest of its data, the fingerprint of the step before it), so a change flows down."""

    def __init__(self, out: Path, log: Callable[[str], None]):
        self.path, self.out, self.log = out / "steps.json", out, log
        self.fps: dict[str, str] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def enter(self, name: str, **settings) -> str:
        fp = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        if self.fps.get(name) != fp:
            if (self.out / name).exists():
                why = "its settings changed since the last run" if name in self.fps else "no record of its settings"
                self.log(f"  tune: {name}: {why}, starting it over")
                shutil.rmtree(self.out / name)
            self.fps[name] = fp
            atomic_write_json(self.path, self.fps)
        return fp


def safety_conversations(pair_files: list[str], path: Path, rejects: list[Path] = ()) -> int:
    """Safety demonstrations as one-turn conversations in `path` (rewritten each time, so a rerun neither duplicates
    nor loses one); returns how many. From each safety prompt: its pair's chosen answer, or, where all its samples
    agreed and it made no pair (`rejects`: synth's no_contrast records), its first sample when that is the right
    behaviour (an answer to a safe look-alike, a refusal of an unsafe prompt). Most safe look-alikes make no pair
    (the policy answers all four samples), so without them the refusals outnumber the answers: measured on the chat
    recipe, 12 refusals beside 3 answers took XSTest's unsafe compliance from 92% to 27% and its safe refusals from
    1.6% to 52%. Refusals are kept up to the number of answers, the first ones in file order. Pairs without a
    `safety` label (on-policy instruction pairs, your own pairs_data) stay DPO-only."""
    from primer.common.jsonl import read_jsonl
    from primer.common.refusal import is_refusal

    def demo(r: dict, reply: str) -> dict:
        return {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": reply}],
                "source": r.get("prompt_id"), "safety": r["safety"], "safety_type": r.get("safety_type")}

    rows = [demo(r, r["chosen"]) for f in pair_files for r in read_jsonl(f) if r.get("safety") and r.get("chosen")]
    for f in rejects:
        for r in read_jsonl(f) if Path(f).is_file() else ():
            first = (r.get("candidates") or [""])[0]
            if r.get("safety") and r.get("reason") == "no_contrast" and first.strip() and \
                    is_refusal(first) == (r["safety"] == "unsafe"):
                rows.append(demo(r, first))
    answers = [r for r in rows if r["safety"] == "safe"]
    rows = answers + [r for r in rows if r["safety"] == "unsafe"][:len(answers)]
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    return len(rows)


def verified_conversations(pair_files: list[str], path: Path, rejects: list[Path] = ()) -> int:
    """Rejection sampling's SFT data in `path` (rewritten each time): for each scored prompt that is not a safety
    prompt, its verified reply (`primer.tune.chat.verified_reply`) as a one-turn conversation; returns how many.
    The rejects (prompts whose samples all scored alike, so no pair) count too: all four passing is the clearest
    case. Why beside DPO: SFT on them is cheap (93 replies, 6 min on 2 cores, against 33 for DPO on the same
    samples' pairs), and SFT on them then DPO gave the best IFEval figures measured here (README, "Rejection
    sampling first, then DPO")."""
    from primer.common.jsonl import read_jsonl
    from primer.tune.chat import verified_reply

    rows = []
    for f in list(pair_files) + [str(p) for p in rejects if Path(p).is_file()]:
        for r in read_jsonl(f):
            reply = None if r.get("safety") else verified_reply(r)
            if reply is not None:
                rows.append({"messages": [{"role": "user", "content": r["prompt"]},
                                          {"role": "assistant", "content": reply}],
                             "source": r.get("prompt_id"), "scored_by": r.get("scored_by")})
    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    return len(rows)


def _row(before, after, task: str, metric: str) -> TuneRow:
    """One metric before and after (two eval results on the same items), with its intervals."""
    from primer.audit.stats import paired_bootstrap
    from primer.eval.items import paired_values

    b, a = before.tasks[task], after.tasks[task]

    def ci(m: dict) -> list[float] | None:
        lo, hi = m.get(f"{metric}_ci_low"), m.get(f"{metric}_ci_high")
        return None if lo is None or hi is None else [lo, hi]

    xb, xa = paired_values(before.samples[task], after.samples[task], metric)
    diff_ci = list(paired_bootstrap(xa, xb).drop_ci) if xa else None
    return TuneRow(task=task, metric=metric, n=b.n, before=b.metrics.get(metric), after=a.metrics.get(metric),
                   before_ci=ci(b.metrics), after_ci=ci(a.metrics), diff_ci=diff_ci)
