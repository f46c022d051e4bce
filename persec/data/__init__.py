"""Datasets: readers by layout (gt.txt folders, LMDB trees, image folders), splits, statistics,
the resumable sampler, data modules, augmentation, shards and the word renderer."""
