"""Sharded datasets for streamed pretraining: the shard formats (format), reading them as
one shuffled stream split over ranks and workers (stream), and writing them (write)."""
