"""Text lines (issue 30, item 3): aspect-keeping input, right padding, width buckets in
the resumable sampler, and line text from the word sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from persec.data.dataset import collate_samples
from persec.data.render.words import WordConfig, WordSampler
from persec.data.sampler import ResumableSampler, bucketed_order
from persec.errors import PersecError
from persec.image import ImageConfig, input_width, min_width, pad_to_width, to_tensor

LINE = ImageConfig(height=32, width=512, keep_aspect=True)


@pytest.mark.parametrize(
    ("size", "width"),
    [
        ((400, 64), 200),  # aspect 6.25 kept: 200 px at height 32
        ((406, 64), 204),  # 203 px, rounded up to a multiple of 4
        ((3000, 50), 512),  # wider than the cap: squeezed to it
        ((10, 40), 8),  # narrower than min_width before padding
    ],
)
def test_input_width_keeps_aspect_in_steps_of_four(size, width):
    assert input_width(size, LINE) == width
    assert input_width(size, ImageConfig()) == 128  # the benchmark stretch


def test_to_tensor_keeps_aspect_and_pads_narrow_images_to_the_minimum():
    wide = to_tensor(Image.new("RGB", (400, 64), "white"), LINE)
    assert wide.shape == (3, 32, 200)
    narrow = Image.new("RGB", (10, 40), "white")
    narrow.paste((0, 0, 0), (0, 0, 3, 40))  # a black stroke on white paper
    x = to_tensor(narrow, LINE)
    assert x.shape == (3, 32, min_width(LINE)) == (3, 32, 64)
    assert (x[..., 8:] == 1.0).all()  # padded with the (white) background, not stretched
    assert (x[..., 0] == -1.0).all()


def test_pad_to_width_fills_with_each_images_background():
    line = torch.ones(3, 4, 6)  # white paper ...
    line[:, 1:3, 1:5] = -1.0  # ... with a black stroke that touches the right edge
    line[0] = 0.5  # a tinted channel
    other = torch.zeros(3, 4, 9)
    batch = pad_to_width([line, other])
    assert batch.shape == (2, 3, 4, 9)
    assert torch.equal(batch[0, ..., :6], line) and torch.equal(batch[1], other)
    assert (batch[0, 1:, :, 6:] == 1.0).all() and (batch[0, 0, :, 6:] == 0.5).all()
    assert pad_to_width([line], 12).shape == (1, 3, 4, 12)


def test_collate_pads_lines_of_different_widths():
    items = [(torch.zeros(3, 32, 40), "ab"), (torch.ones(3, 32, 64), "a b c")]
    images, labels, skipped = collate_samples(items)
    assert images.shape == (2, 3, 32, 64) and labels == ["ab", "a b c"] and not skipped
    # Different heights cannot be padded: a list, as before.
    images, _, _ = collate_samples([(torch.zeros(3, 32, 8), "a"), (torch.zeros(3, 16, 8), "b")])
    assert isinstance(images, list)


def test_bucketed_order_groups_similar_widths_and_keeps_every_sample():
    keys = torch.randint(8, 1000, (640,), generator=torch.Generator().manual_seed(0))
    order = torch.randperm(640, generator=torch.Generator().manual_seed(1))
    out = bucketed_order(order, keys, 16, 10, torch.Generator().manual_seed(2))
    assert sorted(out.tolist()) == list(range(640))
    # every pool of 10 batches holds the same samples as before, only regrouped
    for p in range(0, 640, 160):
        assert set(out[p : p + 160].tolist()) == set(order[p : p + 160].tolist())
    spread = keys[out].view(-1, 16)
    plain = keys[order].view(-1, 16)
    bucketed = (spread.max(1).values - spread.min(1).values).float().mean()
    unsorted = (plain.max(1).values - plain.min(1).values).float().mean()
    assert bucketed < unsorted / 5
    with pytest.raises(ValueError, match="do not fill"):
        bucketed_order(order[:30], keys, 16, 10, torch.Generator())


def test_bucketed_sampler_is_a_function_of_seed_and_epoch_and_resumes_exactly():
    keys = torch.randint(8, 1000, (300,), generator=torch.Generator().manual_seed(0))

    def sampler():
        return ResumableSampler(300, 8, seed=5, keys=keys, pool_batches=4)

    whole = list(sampler()) + list(sampler().epoch_order(1).tolist())
    resumed = sampler()
    resumed.start_at_step(20)  # 160 samples in
    assert list(resumed)[:50] == whole[160:210]
    assert torch.equal(sampler().epoch_order(3), sampler().epoch_order(3))
    assert not torch.equal(sampler().epoch_order(3), sampler().epoch_order(4))
    with pytest.raises(PersecError, match="width keys"):
        ResumableSampler(300, 8, keys=keys[:10])


def test_word_sampler_draws_lines_of_words(tmp_path):
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,") + ["<space>"]
    charset = tmp_path / "chars.txt"
    charset.write_text("\n".join(chars) + "\n")
    sampler = WordSampler(WordConfig(line_words=(3, 6)), charset=str(charset), max_length=60)
    rng = np.random.default_rng(0)
    lines = [sampler.sample(rng) for _ in range(50)]
    assert all(len(line) <= 60 and "  " not in line and line == line.strip() for line in lines)
    assert min(len(line.split(" ")) for line in lines) >= 1
    assert max(len(line.split(" ")) for line in lines) >= 3
    with pytest.raises(PersecError, match="no space"):
        WordSampler(WordConfig(line_words=(2, 4)), charset="36_lowercase")
    with pytest.raises(PersecError, match="line_words"):
        WordSampler(WordConfig(line_words=(0, 4)), charset=str(charset))
