"""Text lines end to end (issue 30, item 3): width keys from headers and rendered text,
a line model reading images of several widths (PyTorch and ONNX with a dynamic width),
and `persec finetune` → `persec read` on rendered lines with width buckets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import noise_image, write_gt_folder
from PIL import Image
from tiny import FINETUNE_TINY
from torch.utils.data import ConcatDataset, Subset

from persec.data.buckets import GLYPH_WIDTH, width_keys
from persec.data.layouts import open_dataset
from persec.data.render.config import SynthConfig
from persec.data.render.dataset import SynthDataset
from persec.data.render.words import WordConfig
from persec.errors import PersecError
from persec.image import ImageConfig
from persec.inference.export import export_onnx, sidecar_path
from persec.inference.onnx_runtime import OnnxRecognizer
from persec.models.aggregator import AggregatorConfig
from persec.models.decoders.base import DecoderConfig
from persec.models.encoders.base import EncoderConfig
from persec.models.recognizer import Recognizer, RecognizerConfig

LINE = ImageConfig(height=32, width=512, keep_aspect=True)
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789") + ["<space>"]


@pytest.fixture(scope="module")
def charset(tmp_path_factory):
    path = tmp_path_factory.mktemp("charset") / "lines.txt"
    path.write_text("\n".join(CHARS) + "\n")
    return path


def _png(width: int, height: int) -> bytes:
    import io

    out = io.BytesIO()
    noise_image(width, height).save(out, format="PNG")
    return out.getvalue()


def test_width_keys_read_headers_and_rendered_text(tmp_path, charset):
    write_gt_folder(tmp_path / "gt", [(_png(300, 60), "a b"), (_png(90, 30), "c"), (b"", "d")])
    folder = open_dataset(tmp_path / "gt", charset=str(charset))
    keys = width_keys(folder, LINE)
    assert keys.tolist()[:2] == [160, 96]  # 300 px at 60 high -> 160 at 32; 90 at 30 -> 96
    synth = SynthDataset(
        5,
        SynthConfig(
            charset=str(charset), width=None, max_length=60, words=WordConfig(line_words=(2, 5))
        ),
        seed=3,
    )
    texts = [synth[i][1] for i in range(5)]
    assert width_keys(synth, LINE).tolist() == [
        min(512, round(len(t) * GLYPH_WIDTH * 32)) for t in texts
    ]
    both = width_keys(ConcatDataset([Subset(folder, [1, 0]), synth]), LINE)
    assert both.tolist()[:2] == [96, 160] and len(both) == 7
    with pytest.raises(PersecError, match="bucket_by_width"):
        width_keys(list(range(3)), LINE)


def _live_line_model(encoder: str, decoder: DecoderConfig, seed: int) -> Recognizer:
    """A tiny line model whose W-MHSA aggregators change its output (not the identity
    they start as), so their windows, padding and shifts are exercised at every width."""
    torch.manual_seed(seed)
    live = AggregatorConfig(identity_init=False)
    config = RecognizerConfig(
        image=LINE,
        encoder=EncoderConfig(
            name=encoder, size="tiny", stroke_aggregator=live, semantic_aggregator=live
        ),
        decoder=decoder,
    )
    return Recognizer(config).eval()


@pytest.fixture(scope="module")
def line_model():
    return _live_line_model("resnet", DecoderConfig(name="ctc", lstm_layers=0), seed=0)


def _line(width: int, seed: int) -> Image.Image:
    return noise_image(width, 40, seed=seed)


def test_line_model_reads_each_width_as_if_alone(line_model):
    lines = [_line(w, i) for i, w in enumerate((30, 250, 700))]
    x = [line_model.preprocess(im) for im in lines]
    assert [t.shape[-1] for t in x] == [64, 200, 512]  # min width, kept aspect, capped
    with torch.no_grad():
        alone = [line_model(t[None])[0] for t in x]
    assert [a.shape[0] for a in alone] == [16, 50, 128]  # one CTC frame per 4 px
    together = line_model.read(lines)
    assert [r[0] for r in together] == [line_model.decode(a[None])[0][0] for a in alone]


def test_onnx_export_has_a_dynamic_width(tmp_path, line_model):
    path = export_onnx(line_model, tmp_path / "line.onnx")
    info = __import__("json").loads(sidecar_path(path).read_text())
    assert info["input"]["shape"][-1] == "width" and info["image"]["keep_aspect"]
    onnx = OnnxRecognizer(path, threads=1)
    # At height 32 the 250 and 320 px lines (40 high) are 200 and 256 px: 50 and 64
    # frames, padded to the stroke windows (4) or to the semantic ones (10) but not both;
    # the export traced 320 px (80 frames), padded for neither.
    for i, width in enumerate((30, 250, 320, 400, 700, 1000)):
        x = line_model.preprocess(_line(width, i))[None]
        with torch.no_grad():
            ref = line_model(x).numpy()
        np.testing.assert_allclose(onnx(x), ref, atol=1e-4, rtol=0)
    lines = [_line(w, i) for i, w in enumerate((120, 400))]
    assert [t for t, _ in onnx.read(lines)] == [t for t, _ in line_model.read(lines)]


def test_onnx_export_of_a_bilstm_line_model_explains_the_fixed_width(tmp_path):
    config = RecognizerConfig(
        image=LINE,
        encoder=EncoderConfig(name="resnet", size="tiny", aggregators=False),
        decoder=DecoderConfig(name="ctc", lstm_layers=1, hidden=16),
    )
    with pytest.raises(PersecError, match="lstm_layers=0"):
        export_onnx(Recognizer(config).eval(), tmp_path / "lstm.onnx")


def test_finetune_on_rendered_lines_then_read_a_line(run_cli, tmp_path, charset):
    run = tmp_path / "run"
    code, _, err = run_cli(
        [
            "finetune",
            *FINETUNE_TINY,
            f"model.charset={charset}",
            "model.image.keep_aspect=true",
            "model.image.width=640",
            "model.decoder.lstm_layers=0",
            f"data.synth.charset={charset}",
            "data.synth.width=null",
            "data.synth.max_length=40",
            "data.synth.words.line_words=[2,4]",
            "data.synth_train=64",
            "data.synth_val=16",
            "data.max_label_length=0",
            "data.bucket_by_width=true",
            "data.bucket_pool=2",
            "trainer.max_steps=6",
            "trainer.val_every=6",
            f"output_dir={run}",
        ]
    )
    assert code == 0, err
    line = SynthDataset(
        1,
        SynthConfig(
            charset=str(charset), width=None, max_length=40, words=WordConfig(line_words=(4, 4))
        ),
        split="test",
        seed=9,
    )[0][0]
    assert line.width > 4 * line.height  # a line, not a 4:1 word crop
    line.save(tmp_path / "line.png")
    code, out, err = run_cli(["read", "--model", str(run / "model"), str(tmp_path / "line.png")])
    assert code == 0, err
    assert "line.png" in out


def test_an_attention_decoder_refuses_uncapped_labels_before_training():
    from persec.training.finetune import FinetuneConfig, check_label_cap

    config = FinetuneConfig()
    config.model.decoder = DecoderConfig(name="attn", d_model=32, heads=2, layers=1)
    model = Recognizer(config.model)
    check_label_cap(config, model)  # 25 <= 25
    config.data.max_label_length = 0
    with pytest.raises(PersecError, match="max_length=25"):
        check_label_cap(config, model)


def test_a_line_model_no_wider_than_its_minimum_exports_with_a_fixed_width(tmp_path):
    config = RecognizerConfig(
        image=ImageConfig(height=32, width=64, keep_aspect=True),
        encoder=EncoderConfig(name="resnet", size="tiny", aggregators=False),
        decoder=DecoderConfig(name="ctc", lstm_layers=0),
    )
    path = export_onnx(Recognizer(config).eval(), tmp_path / "narrow.onnx")
    assert OnnxRecognizer(path, threads=1)(torch.zeros(1, 3, 32, 64)).shape == (1, 16, 37)


def test_a_vit_attention_line_model_exports_with_a_dynamic_width(tmp_path):
    """The other encoder and decoder families: a ViT encoder (its patch merges and
    attention over a width that changes) and the attention decoder's fixed-length loop
    over memory of any length."""
    model = _live_line_model("vit", DecoderConfig(name="attn", d_model=32, heads=2, layers=1), 1)
    onnx = OnnxRecognizer(export_onnx(model, tmp_path / "vit-attn.onnx"), threads=1)
    for width in (64, 200, 512):
        x = torch.rand(1, 3, 32, width, generator=torch.Generator().manual_seed(width)) * 2 - 1
        with torch.no_grad():
            np.testing.assert_allclose(onnx(x), model(x).numpy(), atol=1e-4, rtol=0)


def test_reading_lines_batches_them_by_width_and_keeps_the_order(line_model):
    from persec.models.recognizer import read_in_batches

    widths = [400, 80, 300, 90, 500, 85]  # at height 40: 320, 64, 240, 72, 400, 68 px
    lines = [_line(w, i) for i, w in enumerate(widths)]
    batch_widths: list[int] = []

    def recognize(batch):  # (N, C, H, W) -> the batch's number, for every row
        batch_widths.append(int(batch.shape[-1]))
        return [(str(len(batch_widths)), 1.0)] * len(batch)

    readings = read_in_batches(lines, LINE, recognize, batch_size=2)
    assert batch_widths == [68, 240, 400]  # (64, 68), (72, 240), (320, 400): narrow first
    assert [t for t, _ in readings] == ["3", "1", "2", "2", "3", "1"]  # order given
    assert len(line_model.read(lines, batch_size=2)) == len(lines)
