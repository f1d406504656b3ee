"""Hessian-vector products saved as they are computed, so that a stopped solve resumes where it stopped."""

import hashlib
import os
import tempfile
import time
from pathlib import Path

import torch


class HvpJournal:
    """A folder of Hessian-vector products, saved as they are computed and read back when the solve reruns.

    The full training set's top eigenvalues take most of a full-size run's analysis. Given a journal
    (`top_eigenpairs(..., journal=)`), a process stopped part-way (Ctrl-C, a session's end) loses only
    the product in flight. Each product is filed under a digest of its operator
    (the weights, inputs, targets, chunking, preconditioner and precision) and of the exact bits of the
    vector it multiplies. On a CPU the solver repeats itself exactly (fixed seeds, the same thread count),
    so a rerun asks for the same vectors, gets the saved products back bit for bit, and computes from the
    first one that is missing. A vector or operator that differs is simply not found: a journal can cost
    time but never change an answer. Files are written atomically; one that cannot be read is recomputed.

    Counts for this process: `replayed` and `computed` products; `replayed_s`, what the replayed products
    took when they were computed; `replay_s`, what reading them back took here.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.replayed = self.computed = 0
        self.replayed_s = self.replay_s = 0.0

    def wrap(self, hvp, operator: str):
        """`hvp` with its products journaled; `operator` names what it multiplies by (`_operator_digest`)."""
        self.folder.mkdir(parents=True, exist_ok=True)

        def journaled(v):
            started = time.perf_counter()
            digest = hashlib.blake2b(operator.encode(), digest_size=20)
            digest.update(_bytes(v))
            path = self.folder / f"{digest.hexdigest()}.pt"
            saved = self._read(path, v)
            if saved is not None:
                self.replayed += 1
                self.replayed_s += saved["seconds"]
                self.replay_s += time.perf_counter() - started
                return saved["hv"].to(v.device)
            hv = hvp(v)
            self._write(path, {"hv": hv.detach().cpu(), "seconds": time.perf_counter() - started})
            self.computed += 1
            return hv

        return journaled

    def seconds(self, wall_s: float) -> float:
        """What a solve that took `wall_s` here would have taken uninterrupted: replays count at their cost."""
        return wall_s - self.replay_s + self.replayed_s

    @staticmethod
    def _read(path, v):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            hv = saved["hv"]
            if hv.shape == v.shape and hv.dtype == v.dtype:
                return {"hv": hv, "seconds": float(saved["seconds"])}
        except Exception:  # noqa: BLE001 - absent, cut short or foreign: computed again (and overwritten)
            pass
        return None

    def _write(self, path, record):
        handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                torch.save(record, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _bytes(t) -> bytes:
    """A tensor's exact bits (any dtype or device)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _operator_digest(model, criterion, inputs, targets, batch_size, scale) -> str:
    """A digest of everything an HVP operator depends on but its precision: weights, data, chunks, scaling."""
    digest = hashlib.blake2b(repr((type(criterion).__name__, batch_size)).encode(), digest_size=20)
    for t in [*model.parameters(), inputs, targets] + ([] if scale is None else [scale]):
        digest.update(repr((str(t.dtype), tuple(t.shape))).encode())
        digest.update(_bytes(t))
    return digest.hexdigest()
