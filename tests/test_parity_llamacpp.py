"""Parity with llama-cpp-python on the same bundled GGUF, teacher-forced on WikiText-2 text.

llama.cpp multiplies with 8-bit-quantized activations, so exact argmaxes part at near-ties; the
bar is top-1 agreement >= 96% and mean total-variation distance <= 0.04 over >= 1,000 positions,
for the exact fp32 forward (what scores use) and for the fast decoder with int8 activation rows
(what decode steps use: the same rule as llama.cpp's Q8_1, so it should agree at least as well).
"""

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")

WINDOW, WINDOWS = 384, 5  # 5 x 383 = 1,915 predicted positions


@pytest.mark.slow
def test_teacher_forced_agreement_with_llama_cpp(data_dir):
    from primer.errors import PrimerError
    from primer.weights.load import load_model

    try:
        model, tok, meta = load_model("bundled")
    except PrimerError as e:
        pytest.skip(str(e))
    text = (data_dir / "wikitext2" / "wikitext-2-raw-test.txt").read_text(encoding="utf-8")[:100_000]
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) >= WINDOW * WINDOWS
    from primer.weights.llamacpp import open_llama

    llm = open_llama(meta["source"], n_ctx=WINDOW, n_batch=WINDOW, logits_all=True, verbose=False,
                          n_threads=2)
    from primer.model.quant import fast_decoder

    dec = fast_decoder(model)
    agree, tv, n = {"fp32": 0, "act8": 0}, {"fp32": 0.0, "act8": 0.0}, 0
    for w in range(WINDOWS):
        window = ids[w * WINDOW: (w + 1) * WINDOW]
        llm.reset()
        llm.eval(window)
        theirs = torch.from_numpy(np.array(llm.scores[: len(window)], dtype=np.float32))
        theirs = theirs[:-1]  # positions that predict a next token of the text
        with torch.no_grad():
            outs = {"fp32": model(torch.tensor([window]))[0], "act8": dec(torch.tensor([window]), act8=True)[0]}
        for kind, ours in outs.items():
            ours = ours[:-1]
            agree[kind] += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
            tv[kind] += float(0.5 * (ours.softmax(-1) - theirs.softmax(-1)).abs().sum(-1).sum())
        n += theirs.shape[0]
    assert n >= 1000
    for kind, hits in agree.items():
        top1, mean_tv = hits / n, tv[kind] / n
        print(f"llama.cpp parity ({kind}) over {n} positions: top-1 agreement {top1:.3f}, mean TV {mean_tv:.4f}")
        assert top1 >= 0.96, f"{kind}: top-1 agreement {top1:.3f}"
        assert mean_tv <= 0.04, f"{kind}: mean TV {mean_tv:.4f}"
