"""Which device a training run uses, and the memory it hands back when it ends.

A trial that Ray gave a GPU trains on that GPU or not at all: when torch cannot use it (a CPU
build of torch, a driver older than torch's CUDA build wants, a GPU the build has no kernels
for), `pick_device` raises GPUUnavailableError, one line naming torch's CUDA version, the driver
it found and the node, instead of training on the CPU at a fraction of the speed.
Test clusters that declare GPU slots without GPUs (Ray's fake multinode provider,
`ray start --num-gpus=1` on a CPU machine) set VISIONTUNE_ALLOW_FAKE_GPUS=1: such a trial then
trains on the CPU, and the device it records says so.

Sweeps run with reuse_actors=True: a worker process trains one trial after another, and a Ray
task worker evaluates one checkpoint after another. Whatever a trial leaves reachable (a model, an
optimizer, a dataset on the GPU) or cached (CUDA's allocator keeps freed blocks for itself) is
missing for the next one, so every trial and evaluation runs inside `releasing_memory`.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from visiontune.trainables.cuda_versions import min_driver

ALLOW_FAKE_GPUS = "VISIONTUNE_ALLOW_FAKE_GPUS"  # "1": a GPU torch cannot use means the CPU
DRIVER_FILE = Path("/proc/driver/nvidia/version")  # the loaded kernel module's version


class GPUUnavailableError(RuntimeError):
    """Ray assigned this process a GPU that torch cannot use (a one-line message)."""


def pick_device(
    gpu_ids: Sequence[Any],
    cuda_available: bool,
    *,
    visible: str | None = None,
    node: str | None = None,
    problem: str | None = None,
) -> str:
    """The torch device for a process Ray assigned the GPUs `gpu_ids` (ray.get_gpu_ids()):
    "cpu" without any, else "cuda" / "cuda:N", the assigned GPU among those CUDA can see.

    Ray leaves CUDA_VISIBLE_DEVICES alone for a trial that asked for no GPU, so on a GPU node
    `torch.cuda.is_available()` is True there too: only the assignment says whose GPU it is.
    `visible` is the process's CUDA_VISIBLE_DEVICES: Ray sets it to the assigned GPU, which
    CUDA then calls device 0; with RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1 it stays
    unset (every GPU visible) and the assigned id is the CUDA index itself.
    With GPUs assigned but `cuda_available` False, GPUUnavailableError (`node` and `problem`,
    what made CUDA unusable, go into its message), or "cpu" when VISIONTUNE_ALLOW_FAKE_GPUS=1.
    """
    if not gpu_ids:
        return "cpu"
    if not cuda_available:
        message = gpu_unavailable_message(gpu_ids, node or node_name(), problem)
        if os.environ.get(ALLOW_FAKE_GPUS) != "1":
            raise GPUUnavailableError(message)
        warnings.warn(f"{message}; {ALLOW_FAKE_GPUS}=1: using the CPU", RuntimeWarning, 2)
        return "cpu"
    index = cuda_index(gpu_ids, visible)
    return "cuda" if index == 0 else f"cuda:{index}"


def cuda_index(gpu_ids: Sequence[Any], visible: str | None) -> int:
    """CUDA's index of the first assigned GPU: its place in CUDA_VISIBLE_DEVICES (`visible`), or
    the id itself when that is unset (every GPU of the node visible)."""
    first = str(gpu_ids[0])
    if visible is None:
        return int(first) if first.isdigit() else 0
    listed = [entry.strip() for entry in visible.split(",")]
    return listed.index(first) if first in listed else 0


def gpu_unavailable_message(gpu_ids: Sequence[Any], node: str, problem: str | None) -> str:
    """One line: the assigned GPUs, the node, torch's CUDA build with the driver it wants, and
    the driver found here (or what else stood in the way)."""
    ids = ", ".join(str(i) for i in gpu_ids)
    cuda = torch.version.cuda
    if cuda is None:
        build = f"torch {torch.__version__} is a CPU-only build"
    else:
        wanted = min_driver(cuda)
        needs = f", needs NVIDIA driver >= {wanted}" if wanted else ""
        build = f"torch {torch.__version__} (CUDA {cuda}{needs}) cannot use it"
    found = problem or describe_driver()
    return (
        f"Ray assigned GPU {ids} to this process on node {node}, but {build}: {found} "
        f"(a test cluster with declared-only GPUs sets {ALLOW_FAKE_GPUS}=1)"
    )


def nvidia_driver_version() -> tuple[str, str] | None:
    """(version, where it was read) of the loaded NVIDIA driver; None when none is visible."""
    try:
        text = DRIVER_FILE.read_text(errors="replace")
    except OSError:
        text = ""
    match = re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", text)
    if match:
        return match.group(1), str(DRIVER_FILE)
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    versions = out.stdout.split()
    return (versions[0], "nvidia-smi") if versions else None


def describe_driver() -> str:
    found = nvidia_driver_version()
    if found is None:
        return f"no NVIDIA driver visible (no {DRIVER_FILE}, no nvidia-smi)"
    version, where = found
    return f"NVIDIA driver {version} (from {where})"


def node_name() -> str:
    """This machine's host name, with its IP as Ray knows it inside a Ray worker."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return f"{host} ({ray.util.get_node_ip_address()})"
    return host


def cuda_problem(index: int = 0) -> str | None:
    """Why torch cannot run on CUDA device `index` here, or None when it can: no usable CUDA
    (CPU build, missing or old driver), or a GPU whose architecture this build has no kernels
    for (a V100, sm_70, under the CUDA 13 wheels, which start at sm_75)."""
    if not torch.cuda.is_available():
        return describe_driver()
    if index >= torch.cuda.device_count():
        return f"CUDA sees {torch.cuda.device_count()} GPU(s), none with index {index}"
    major, minor = torch.cuda.get_device_capability(index)
    archs = torch.cuda.get_arch_list()
    if not archs or arch_supported((major, minor), archs):
        return None
    name = torch.cuda.get_device_name(index)
    return f"{name} is sm_{major}{minor}; this build has kernels for {', '.join(archs)}"


def arch_supported(capability: tuple[int, int], archs: Sequence[str]) -> bool:
    """Whether a build with kernels for `archs` (torch.cuda.get_arch_list()) runs on a GPU of
    `capability`: machine code (sm_XY) runs on the same major version with minor >= Y,
    PTX (compute_XY) is compiled by the driver for any newer GPU."""
    for arch in archs:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("af")  # sm_90a / sm_100f: family-specific builds
        if not digits.isdigit():
            continue
        built = (int(digits[:-1]), int(digits[-1]))
        if kind == "sm" and built[0] == capability[0] and built[1] <= capability[1]:
            return True
        if kind == "compute" and built <= capability:
            return True
    return False


def assigned_device(gpu_ids: Sequence[Any]) -> str:
    """`pick_device` for this process: torch's own view of CUDA, this process's
    CUDA_VISIBLE_DEVICES, and this node. A CUDA device becomes the current one, so CUDA calls
    without a device (RNG state, bfloat16 support, empty_cache) mean it."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    problem = cuda_problem(cuda_index(gpu_ids, visible)) if gpu_ids else None
    device = pick_device(gpu_ids, problem is None, visible=visible, problem=problem)
    if device != "cpu":
        torch.cuda.set_device(torch.device(device).index or 0)  # an int: "cuda" has no index
    return device


def local_device() -> str:
    """Inside a Ray task or actor: CUDA only when Ray assigned it a GPU (see `pick_device`).
    Elsewhere (`visiontune train`, a notebook): CUDA when torch sees a GPU."""
    ray = sys.modules.get("ray")  # never imported: not in a Ray worker
    in_worker = (
        ray is not None
        and ray.is_initialized()
        and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    )
    if in_worker:
        return assigned_device(ray.get_gpu_ids())
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_label(device: str | torch.device, gpu_ids: Sequence[Any] = ()) -> str:
    """What a run records as its device: the GPU's name ("Tesla T4"), or "cpu"; a CPU run that
    Ray gave the GPUs `gpu_ids` (allowed by VISIONTUNE_ALLOW_FAKE_GPUS) says so."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if gpu_ids:
        return f"cpu (Ray GPU {', '.join(map(str, gpu_ids))} unusable, {ALLOW_FAKE_GPUS}=1)"
    return "cpu"


def ultralytics_device(device: str) -> str:
    """Ultralytics' name for a torch device: "cpu", or the CUDA index as a string ("0")."""
    parsed = torch.device(device)
    return "cpu" if parsed.type == "cpu" else str(parsed.index or 0)


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
