"""The model and its decoding in a process of their own.

In the server's process the CTC beam search (pure Python, a few ms a crop) would hold
the GIL against request handling; in a child process the two run side by side. The
server keeps its own copy of the model for preprocessing and its description; batches
(B, C, H, W) go to the child through a pipe and :class:`DetailedReading` lists come back.
"""

from __future__ import annotations

import multiprocessing as mp
import threading

import torch

from persec.image import pad_to_width
from persec.inference.details import DetailedReading, read_detailed


def _serve_model(conn, model_dir: str | None, device: str, top_k: int, threads: int) -> None:
    """The child: load the model, then answer batches until the pipe closes."""
    import signal

    from persec.inference.model import load_model

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's; it closes the pipe
    try:
        if threads:
            torch.set_num_threads(threads)
        model = load_model(model_dir, device)
    except Exception as e:  # the parent reports it
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            batch = torch.from_numpy(conn.recv())
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", read_detailed(model, batch, top_k)))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class ModelProcess:
    """``images -> readings`` computed in a child process (the :class:`Batcher`'s work).

    Args:
        model_dir: the saved model (None: the shipped one).
        device: where the child runs it.
        top_k: alternatives per reading.
        threads: torch threads of the child (0: torch's default).

    Raises:
        RuntimeError: the child could not load the model.
    """

    def __init__(
        self, model_dir: str | None, device: str = "cpu", top_k: int = 5, threads: int = 0
    ):
        ctx = mp.get_context("spawn")  # no fork of a process that holds threads
        self._conn, child = ctx.Pipe()
        self._lock = threading.Lock()
        self._process = ctx.Process(
            target=_serve_model, args=(child, model_dir, device, top_k, threads), daemon=True
        )
        self._process.start()
        child.close()
        kind, message = self._conn.recv()
        if kind != "ready":
            self.close()
            raise RuntimeError(f"the model process could not start: {message}")

    @property
    def alive(self) -> bool:
        """Whether the child process still runs."""
        return self._process.is_alive()

    def __call__(self, images: list[torch.Tensor]) -> list[DetailedReading]:
        """Read preprocessed images (C, H, W) in the child, one batch at a time."""
        with self._lock:  # one batch in flight
            try:
                self._conn.send(pad_to_width(images).numpy())  # (B, C, H, W), plain bytes
                kind, payload = self._conn.recv()
            except (EOFError, OSError) as e:
                raise RuntimeError(f"the model process is gone ({type(e).__name__})") from e
        if kind != "ok":
            raise RuntimeError(f"the model process failed: {payload}")
        return payload

    def close(self) -> None:
        """End the child process."""
        self._conn.close()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
