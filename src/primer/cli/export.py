"""`primer export MODEL --out PATH`: write a model as a GGUF file (llama.cpp) or an HF directory."""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.weights.export import ExportConfig

    p = sub.add_parser(
        "export", help="write a model as GGUF (f16, q8_0, q4_0, q4_1) for llama.cpp, or as an HF directory",
        description="Read MODEL ('bundled', a .gguf, an HF dir or a primer checkpoint) and write it as one GGUF "
        "file with its tokenizer and chat template (llama.cpp, Ollama, LM Studio run it), or with --to hf as a "
        "directory transformers loads.",
    )
    p.add_argument("model", help="'bundled', a .gguf file, an HF model dir or a primer checkpoint dir")
    p.add_argument("-o", "--out", required=True, help="output .gguf file (--to gguf) or directory (--to hf)")
    add_arguments(p, ExportConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from primer.config import from_args
    from primer.weights.export import ExportConfig, export_model

    r = export_model(args.model, args.out, from_args(ExportConfig, args), progress=True)
    print(json.dumps(r.to_dict(), indent=2))
    return 0
