"""The word renderer: what it draws (config), fonts, word sources (words), drawing (synth),
rendered words as a dataset (dataset) and rendering into an LMDB (writer)."""
