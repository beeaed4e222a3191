"""The Ray side of a trainable, in one place: the device and threads from the trial's resources,
restore from the trial's checkpoint, one report (metrics + checkpoint) per epoch, and the memory
handed back when a trial ends. Ray's API has churned every year; the session-based trainables
(classifier, Faster R-CNN) only call `run_session`.

Sweeps run with reuse_actors=True: a worker process trains one trial after another, and a Ray
task worker evaluates one checkpoint after another. Whatever a trial leaves reachable (a model, an
optimizer, a dataset on the GPU) or cached (CUDA's allocator keeps freed blocks for itself) is
missing for the next one, so every trial and evaluation runs inside `releasing_memory`.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def trial_cpus() -> int:
    """CPU cores Ray reserved for this trial (torch should use that many threads); a fractional
    share rounds down, to at least one thread."""
    from ray import tune

    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    return max(1, int(cpus))


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


def trial_device() -> str:
    """The device of this Ray worker's trial or task: CUDA only when Ray assigned it a GPU."""
    import ray

    return pick_device(ray.get_gpu_ids(), torch.cuda.is_available())


def local_device() -> str:
    """`trial_device()` inside a Ray task or actor; elsewhere (`visiontune train`, a notebook),
    CUDA when torch sees a GPU."""
    ray = sys.modules.get("ray")  # never imported: not in a Ray worker
    in_worker = (
        ray is not None
        and ray.is_initialized()
        and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    )
    if in_worker:
        return trial_device()
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


def run_session(make_session: Callable[[str], Any], checkpoint_file: str) -> None:
    """Drive a Session (train_epoch/save/load/epoch/config.epochs) through a Tune trial on the
    trial's device and threads, and free it when the trial ends however it ends."""
    torch.set_num_threads(trial_cpus())
    device = trial_device()
    with releasing_memory(device):
        _train_and_report(make_session(device), checkpoint_file)


def _train_and_report(session: Any, checkpoint_file: str) -> None:
    """Restore from the trial's checkpoint if any, then train and report epoch by epoch. The
    session lives in this frame only, so it is unreachable once this call is over."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            session.load(Path(directory) / checkpoint_file)
    while session.epoch < session.config.epochs:
        metrics = session.train_epoch()
        with tempfile.TemporaryDirectory() as directory:
            session.save(Path(directory) / checkpoint_file)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
