"""Evaluation: the STR protocol on a saved recognizer (evaluate), scoring a prediction file
against ground truth (score) and choosing beam-search and LM settings (tune_decoding)."""
