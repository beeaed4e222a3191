"""Which device a training run uses, and the memory it hands back when it ends.

Sweeps run with reuse_actors=True: a worker process trains one trial after another, and a Ray
task worker evaluates one checkpoint after another. Whatever a trial leaves reachable (a model, an
optimizer, a dataset on the GPU) or cached (CUDA's allocator keeps freed blocks for itself) is
missing for the next one, so every trial and evaluation runs inside `releasing_memory`.
"""

from __future__ import annotations

import gc
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def pick_device(gpu_ids: Sequence[Any], cuda_available: bool) -> str:
    """CUDA when Ray assigned GPUs (`gpu_ids`) and torch can use one, else CPU.

    Ray leaves CUDA_VISIBLE_DEVICES alone for a trial that asked for no GPU, so on a GPU node
    `torch.cuda.is_available()` is True there too: only the assignment says whose GPU it is.
    """
    if not gpu_ids:
        return "cpu"
    if not cuda_available:
        # a CPU build of torch on a GPU node, or GPU slots declared for scheduling only
        warnings.warn(
            f"Ray assigned GPU(s) {list(gpu_ids)} but torch sees no CUDA device; using the CPU",
            RuntimeWarning,
            stacklevel=2,
        )
        return "cpu"
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs: "cuda" (device 0) is the first of them
    return "cuda"


def local_device() -> str:
    """Inside a Ray task or actor: CUDA only when Ray assigned it a GPU. Elsewhere
    (`visiontune train`, a notebook): CUDA when torch sees a GPU."""
    ray = sys.modules.get("ray")  # never imported: not in a Ray worker
    in_worker = (
        ray is not None
        and ray.is_initialized()
        and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    )
    if in_worker:
        return pick_device(ray.get_gpu_ids(), torch.cuda.is_available())
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def releasing_memory(device: str | torch.device) -> Iterator[None]:
    """Hand back what the block allocated once it ends, normally or by an exception.

    The block must not leave its objects reachable: hold them in a callee's frame or a
    temporary (`train(make_session())`), never in a local of the caller. When the block raises
    (a diverged loss, or the SystemExit with which `tune.report` ends a trial that Tune stopped),
    the traceback's frames still hold the session, its model and a batch as locals while the
    error travels up through Ray: those frames are cleared first (the traceback text keeps every
    file and line). Then `gc.collect()` frees what sits in reference cycles, and on CUDA
    `empty_cache()` returns the allocator's cached blocks, so the next trial of this worker
    starts with the GPU's memory back.
    """
    try:
        yield
    except BaseException as error:
        _clear_frames(error)
        raise
    finally:
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()


def _clear_frames(error: BaseException) -> None:
    """Drop the locals of the finished frames in `error`'s traceback and in those of the errors
    it was raised from (frames still running are left alone by `traceback.clear_frames`)."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
