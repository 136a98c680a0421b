"""In-process teachers: primer's own decoder (`TorchTeacher`, batched, the int4 decode kernels on CPU)
and any GGUF file through llama-cpp-python (`LlamaCppTeacher`)."""

from __future__ import annotations

import time
from pathlib import Path

from primer.errors import PrimerError
from primer.weights.llamacpp import open_llama
from primer.teachers.base import Completion, Prompt, Sampling, Teacher, as_messages


class LlamaCppTeacher(Teacher):
    """Any GGUF file through llama-cpp-python, in-process, one prompt at a time."""

    def __init__(self, path: str | Path, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        """n_threads: CPU threads (default: llama.cpp's choice, half the cores)."""
        path = Path(path)
        if not path.is_file():
            raise PrimerError(f"teacher model file not found: {path}")
        self.path = path
        self.name = f"llama-cpp:{path.name}"
        self.llm = open_llama(path, n_ctx=n_ctx, n_threads=n_threads, verbose=False, seed=0)

    def _complete_batch(self, prompts: list[Prompt], samplings: list[Sampling]) -> list[Completion]:
        outs = []
        for prompt, sampling in zip(prompts, samplings):
            t0 = time.perf_counter()
            try:
                r = self.llm.create_chat_completion(
                    messages=as_messages(prompt),
                    max_tokens=sampling.max_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    seed=sampling.seed,
                    stop=list(sampling.stop) or None,
                    repeat_penalty=sampling.repeat_penalty,
                )
            except ValueError as e:  # e.g. prompt longer than the context: the prompt's fault
                outs.append(Completion("", "error", error=str(e), seconds=time.perf_counter() - t0))
                continue
            ch = r["choices"][0]
            u = r.get("usage") or {}
            outs.append(
                Completion(
                    text=ch["message"].get("content") or "",
                    finish_reason=ch.get("finish_reason") or "stop",
                    prompt_tokens=int(u.get("prompt_tokens", 0)),
                    completion_tokens=int(u.get("completion_tokens", 0)),
                    seconds=time.perf_counter() - t0,
                )
            )
        return outs

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


# ---------------------------------------------------------------------------- in-process (primer's decoder)


class TorchTeacher(Teacher):
    """A model primer loads (`primer.weights.load.load_model`: 'bundled', a GGUF, an HF dir, a checkpoint)
    run in-process on primer's decode engine (`primer.model.engine`: continuous batching of up to
    `batch_size` prompts, the int4 decode kernels on CPU), sampled with temperature / top-p / repeat
    penalty and one seed per prompt, so a prompt's text does not depend on what it was batched with.
    """

    def __init__(self, spec: str = "bundled", batch_size: int = 8, device: str = "cpu",
                 n_threads: int | None = None) -> None:
        import torch

        from primer.model.engine import Engine
        from primer.weights.load import load_model

        if n_threads:
            torch.set_num_threads(n_threads)
        self.batch_size = batch_size
        self.model, self.tok, _ = load_model(spec, device=torch.device(device), decode_only=True)
        self.engine = Engine((self.model, self.tok), max_batch=batch_size)
        label = "SmolLM2-135M-Instruct" if spec == "bundled" else Path(spec).name
        self.name = f"{'bundled' if spec == 'bundled' else 'primer'}:{label}"

    def _complete_batch(self, prompts: list[Prompt], samplings: list[Sampling]) -> list[Completion]:
        from primer.model.engine import encode_prompt
        from primer.model.sampling import SamplingParams

        block = self.engine.max_len
        outs: list[Completion | None] = [None] * len(prompts)
        index: dict[int, int] = {}  # engine request id -> prompt index
        t0 = time.perf_counter()
        for i, (p, s) in enumerate(zip(prompts, samplings)):
            ids = encode_prompt(self.tok, as_messages(p))
            if len(ids) + 1 > block:
                outs[i] = Completion("", "error", len(ids), 0, error=f"prompt of {len(ids)} tokens exceeds the context of {block}")
                continue
            params = SamplingParams(max_new_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
                                    stop=tuple(s.stop), repeat_penalty=s.repeat_penalty, seed=s.seed)
            index[self.engine.submit(ids, params)] = i
        texts = {rid: [] for rid in index}
        while self.engine.has_work():
            for ev in self.engine.step():
                texts[ev.rid].append(ev.text)
                if ev.finish_reason is not None:
                    outs[index[ev.rid]] = Completion("".join(texts[ev.rid]), ev.finish_reason, ev.prompt_tokens,
                                                     ev.completion_tokens)
        share = (time.perf_counter() - t0) / max(1, len(index))
        for i in index.values():
            outs[i].seconds = share
        return outs  # type: ignore[return-value]


def BundledTeacher(batch_size: int = 8, device: str = "cpu", n_threads: int | None = None) -> Teacher:
    """The bundled SmolLM2-135M-Instruct, in-process on primer's decoder."""
    return TorchTeacher("bundled", batch_size=batch_size, device=device, n_threads=n_threads)
