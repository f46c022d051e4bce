"""Decoding CTC logits: prefix beam search, optionally fused with a character n-gram
language model (lm)."""
