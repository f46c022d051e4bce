"""Recognition models: encoders, decoders, windowed attention and the context aggregator, the
encoder output contract (features) and the recognizer that joins them (recognizer)."""
