"""Decoding logits into text, apart from the models: greedy decoding (greedy), the prefix
beam search (beam), its character n-gram language model (lm) and the decoding settings
(settings)."""
