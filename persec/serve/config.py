"""The server's settings and limits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    """What ``persec serve`` accepts and how it batches.

    Attributes:
        host: address to bind; ``127.0.0.1`` keeps the server on this machine.
        port: TCP port.
        max_files: images per request at most.
        max_file_bytes: bytes per image at most (encoded).
        max_request_bytes: bytes per request body at most.
        max_pixels: width × height per image at most (decompression bombs are refused
            from the header, before any pixel is decoded); 16 MP keeps a full request
            of 16 images under 1 GB of decoded pixels.
        max_batch: images per model call at most (server-side batching).
        max_wait_ms: how long an image waits for others to share its model call.
        top_k: alternative readings returned per image.
        examples: a folder of example images the page offers (``""``: none).
        codes: a PerSec pretraining output whose quantizer codes are drawn for each
            image (:mod:`persec.serve.codes`; ``""``: none).
    """

    host: str = "127.0.0.1"
    port: int = 7860
    max_files: int = 16
    max_file_bytes: int = 8 * 1024 * 1024
    max_request_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_batch: int = 32
    max_wait_ms: float = 5.0
    top_k: int = 5
    examples: str = ""
    codes: str = ""
