"""Teachers: the LLMs that write synthetic data (synth) and annotate it (curate), behind one API.

    teacher = load_teacher("bundled")                       # SmolLM2-135M-Instruct, primer's decoder, batched
    teacher = load_teacher("path/to/model.gguf")            # any GGUF via llama-cpp-python
    teacher = load_teacher("runs/x/train/final")            # a primer checkpoint or HF dir, primer's decoder
    teacher = load_teacher("http://host:8000/v1", model="NAME", options=HttpOptions(concurrency=32))  # OpenAI-compatible
    outs = teacher.complete(["Explain rainbows.", [{"role": "user", "content": "Hi"}]],
                            Sampling(max_tokens=200, temperature=0.7))
    for key, out in teacher.imap(((pid, prompt) for ...), sampling): ...   # as results finish

A prompt is a string (one user turn) or a list of chat messages; the teacher applies the model's
own chat template. Every call returns `Completion`s with the text, finish reason ("stop",
"length", or "error" with `error` set for a failure that is the prompt's fault) and token counts,
so callers can keep provenance. An endpoint that stays unreachable after the retries raises
`TeacherUnavailable` (a `PrimerError`) naming the URL and how to check it; callers stop there and
a rerun resumes.

`imap` is the streaming form a long run uses: it pulls (key, prompt) pairs lazily (or
(key, prompt, Sampling) to give one prompt its own settings, e.g. a per-prompt seed), keeps at
most `concurrency` requests in flight (HTTP) or `batch_size` prompts per batch (in-process), and
yields (key, Completion) as each finishes, so results can be written one by one.
"""

from __future__ import annotations

from pathlib import Path

from primer.errors import PrimerError
from primer.teachers.base import Completion, Prompt, Sampling, Teacher, TeacherUnavailable, as_messages
from primer.teachers.http import HttpOptions, HttpTeacher
from primer.teachers.local import BundledTeacher, LlamaCppTeacher, TorchTeacher

__all__ = ["BundledTeacher", "Completion", "HttpOptions", "HttpTeacher", "LlamaCppTeacher", "Prompt", "Sampling",
           "Teacher", "TeacherUnavailable", "TorchTeacher", "as_messages", "load_teacher"]

# ---------------------------------------------------------------------------- factory


def load_teacher(
    spec: str = "bundled",
    model: str | None = None,
    *,
    options: HttpOptions | None = None,
    batch_size: int = 8,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    device: str = "cpu",
) -> Teacher:
    """'bundled', a .gguf path (llama-cpp), a primer checkpoint or HF model dir (primer's decoder),
    or an http(s)://host:port/v1 base URL (with `model`)."""
    if spec == "bundled":
        return BundledTeacher(batch_size=batch_size, device=device, n_threads=n_threads)
    if spec.startswith(("http://", "https://")):
        return HttpTeacher(spec, model, options)
    if spec.endswith(".gguf"):
        return LlamaCppTeacher(spec, n_ctx=n_ctx, n_threads=n_threads)
    if Path(spec).is_dir():
        return TorchTeacher(spec, batch_size=batch_size, device=device, n_threads=n_threads)
    raise PrimerError(
        f"unknown teacher '{spec}': use 'bundled', a .gguf file, a primer checkpoint / HF model dir, "
        "or an OpenAI-compatible base URL like http://127.0.0.1:8000/v1 (with --model NAME)"
    )
