"""`persec data charset`: the characters training labels use, as a charset file."""

from __future__ import annotations

from persec.charset import Charset


def test_data_charset_counts_the_labels_as_written(tmp_path, run_cli):
    folder = tmp_path / "gw"
    (folder / "images").mkdir(parents=True)
    from PIL import Image

    labels = ["£5 paid,", "Caf\u00e9", "Cafe\u0301", "x  y"]
    lines = []
    for i, label in enumerate(labels):
        Image.new("RGB", (40, 16), "white").save(folder / "images" / f"{i}.png")
        lines.append(f"images/{i}.png\t{label}")
    (folder / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "charset.txt"
    code, stdout, err = run_cli(["data", "charset", str(folder), "--out", str(out)])
    assert code == 0, err
    chars = Charset.from_file(out).chars
    # NFC: é once; whitespace runs as one space; case and punctuation kept.
    assert chars == tuple(sorted(set("£5 paid,Café" + "xy")))
    assert "13 characters from 4 labels" in stdout
    code, stdout, _ = run_cli(
        ["data", "charset", str(folder), "--out", str(out), "--min-count", "2"]
    )
    assert code == 0 and "left out (fewer than 2)" in stdout
