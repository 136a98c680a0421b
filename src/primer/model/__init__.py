"""What a model is at run time: the decoder (`transformer`), its tokenizer, batched generation, and the
packed int4/int8 fast decode path (`quant`). Imports nothing above `primer.common`."""
