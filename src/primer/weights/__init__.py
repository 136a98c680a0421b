"""Every external format <-> the model: GGUF in, HF directories in and out, primer checkpoints
(safetensors + meta.json), the bundled SmolLM2 file, and `load.load_model(spec)` over all of them."""
