"""What every plain-PyTorch Session shares: its numeric precision on the device, host-to-device
copies, a complete checkpoint (model, optimizer, LR schedule, gradient scaler, epoch, RNG
states, resolved config) that restores the same run, loaded with weights_only=True, and
`SessionTask`, the trainable contract (trainables/contract.py) for a task whose training state
is such a Session (the classifier and Faster R-CNN).

On the CPU a session computes in float32 exactly as a plain training loop would: no autocast, a
disabled GradScaler (whose scale/step/update are the plain backward and optimizer step) and plain
`.to(device)` copies. Mixed precision and pinned, asynchronous copies apply on CUDA only.

A checkpoint is read into host memory and copied from there (`map_location="cpu"`): the model's
`load_state_dict` copies onto its device, and the optimizer's moves its state next to each
parameter but keeps Adam's `step` counters on the CPU, where torch wants them (read straight onto
a GPU they would stay there). It restores the CUDA RNG of the session's own device only: a
process may see fewer GPUs than the one that saved it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visiontune.params import build_config, config_dict
from visiontune.trainables.contract import InferenceModel, TrainContext
from visiontune.trainables.device import local_device, releasing_memory

CHECKPOINT_FILE = "checkpoint.pt"  # a Session's checkpoint inside an epoch's checkpoint directory


@dataclass(frozen=True)
class Precision:
    """How a session computes on its device: the autocast dtype (None: float32 throughout) and
    the GradScaler that float16 needs (disabled for float32 and bfloat16)."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    device_type: str = "cuda"  # autocast's device type

    @classmethod
    def choose(cls, device: torch.device, amp: bool, allow_bf16: bool = True) -> Precision:
        """Mixed precision when `amp` and the device is CUDA: bfloat16 where the GPU computes it
        natively (Ampere and later; it keeps float32's range, so no loss scaling), else float16
        with a GradScaler. `including_emulation=False`: a T4 (Turing, sm_75, the oldest GPU the
        CUDA 13 torch wheels run on) "supports" bfloat16 only by emulation, slower than float32.
        Anything else, CPU included: float32."""
        dtype = None
        if amp and device.type == "cuda":
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
            dtype = torch.bfloat16 if allow_bf16 and native_bf16 else torch.float16
        return cls(dtype, torch.amp.GradScaler("cuda", enabled=dtype == torch.float16))

    def autocast(self) -> AbstractContextManager:
        """The context for forward passes and losses (a no-op in float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward and step; with float16 the loss is scaled and a step whose
        gradients overflowed is skipped (GradScaler)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


# Float32 everywhere: the plain loop. A disabled GradScaler holds no state.
FULL_PRECISION = Precision(None, torch.amp.GradScaler("cuda", enabled=False))


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor.to(device)` for a batch's small tensors. A CPU tensor bound for a GPU is first
    pinned (page-locked), so the copy runs asynchronously behind the work already queued instead
    of stalling the host. Pinned blocks stay in torch's host cache for the next batch to reuse:
    for a one-time copy of a whole dataset use `upload`."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def upload(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A one-time copy of a large tensor (a whole split) to `device`, from pageable memory.
    Pinning it first would copy it once more on the host, and torch's pinned-memory cache
    keeps every pinned block for reuse, never giving it back: each trial of a reused worker
    would add a dataset's worth of page-locked host memory."""
    return tensor.to(device)


class CheckpointedSession:
    """Mixin for sessions with `model`, `optimizer`, `scheduler`, `precision`, `epoch`,
    `generator` (the session's own torch.Generator for shuffling/augmentation), `config` and
    `device`."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict(),  # {} unless float16 on a GPU
            "epoch": self.epoch,
            "rng": {
                "torch": torch.get_rng_state(),  # dropout, kornia draws, RoI/anchor sampling
                "generator": self.generator.get_state(),  # shuffling and batch augmentation
                # on a GPU, dropout and augmentation draw from the CUDA generator: its own
                # device's, the only one it uses; a CPU session leaves CUDA alone (touching it
                # would put a context on a GPU it was not given)
                "cuda": [torch.cuda.get_rng_state(self.device)]
                if self.device.type == "cuda"
                else [],
            },
            "config": config_dict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # Empty from float32/bfloat16 runs: then the scaler keeps its initial state (an enabled
        # GradScaler refuses an empty state).
        if state["scaler"]:
            self.precision.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        # RNG states must be CPU byte tensors, wherever torch.load's map_location put them
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        cuda_state = saved_cuda_rng(rng)
        if cuda_state is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(cuda_state, self.device)
        self.generator.set_state(rng["generator"].cpu())

    def save(self, path: Path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: Path) -> None:
        self.load_state_dict(read_checkpoint(path))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A session's checkpoint in host memory (see the module docstring), weights_only."""
    return torch.load(path, map_location="cpu", weights_only=True)


def saved_cuda_rng(rng: dict[str, Any]) -> torch.Tensor | None:
    """The CUDA RNG state a checkpoint holds for the device that trained it, as a CPU byte
    tensor; None from a CPU session. Checkpoints written before one state per device was kept
    list every GPU their process saw; the first is the one it trained on (under Ray a trial
    sees its own GPU only, and outside Ray "cuda" is device 0)."""
    states = rng.get("cuda") or []
    return states[0].cpu() if len(states) else None


@dataclass(frozen=True)
class SessionTask:
    """The trainable contract for a task whose training state is a Session: a class built as
    `session_class(config, data, device)` with `epoch`, `config.epochs`, `train_epoch() ->
    metrics`, `evaluate(split) -> dict`, `save(path)`, `load(path)`, `load_state_dict` and
    `inference_model(data) -> InferenceModel`. `summarize(result, split)` turns `evaluate`'s
    dict into `evaluate_checkpoint`'s."""

    name: str
    Config: type
    METRICS: tuple[str, ...]
    DATA_FORMAT: str
    session_class: type
    summarize: Callable[[dict[str, Any], str], dict[str, Any]]

    def build_config(self, values: Mapping[str, Any], where: str) -> Any:
        return build_config(self.Config, values, where)

    def train(self, config: Any, data: Any, context: TrainContext) -> None:
        # the session is a temporary: only `_train_epochs`' frame holds it (see releasing_memory)
        _train_epochs(self.session_class(config, data, context.device), context)

    def load_session(self, checkpoint_dir: str | Path, data: Any, device: str = "cpu") -> Any:
        """Rebuild a Session from a checkpoint directory (its config comes from the file)."""
        path = Path(checkpoint_dir) / CHECKPOINT_FILE
        state = read_checkpoint(path)
        session = self.session_class(self.build_config(state["config"], str(path)), data, device)
        session.load_state_dict(state)
        return session

    def evaluate_checkpoint(self, checkpoint_dir: Path, data: Any, split: str) -> dict[str, Any]:
        device = local_device()
        with releasing_memory(device):
            result = self.load_session(checkpoint_dir, data, device).evaluate(split)
        return self.summarize(result, split)

    def load_model(self, checkpoint_dir: Path, data: Any, device: str = "cpu") -> InferenceModel:
        """The checkpoint's Session (`load_session`) as an InferenceModel; the Session itself,
        with its copy of the dataset on the device, is dropped. A Session seeds torch and
        restores the RNG state it was saved with: the caller's RNG state is kept as it was."""
        cuda = torch.device(device).type == "cuda"
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else []):
            return self.load_session(checkpoint_dir, data, device).inference_model(data)


def decoded_images(images: Any, channels: int) -> list[np.ndarray]:
    """Images as a list of uint8 H x W x `channels` arrays, from: one decoded image (H x W grey
    or H x W x 3 RGB, as `visiontune.data.imagefolder.decode_image` gives it), an image file's
    path, a list of those, or a uint8 N x C x H x W batch (as a decoded split holds images).
    Channels are matched as the loaders do: grey is repeated for an RGB model, colour becomes
    PIL's "L" luminance for a grey one. Sizes are left as they are."""
    if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 4:
        batch = torch.as_tensor(images).cpu().permute(0, 2, 3, 1).numpy()
        return [_with_channels(image, channels) for image in batch]
    if isinstance(images, np.ndarray | torch.Tensor | str | os.PathLike):
        images = [images]
    return [_with_channels(_decoded(image), channels) for image in images]


def _decoded(image: Any) -> np.ndarray:
    if isinstance(image, str | os.PathLike):
        from visiontune.data.imagefolder import decode_image

        return decode_image(Path(image))
    array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {array.shape}")
    return array


def _with_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels (0-255), got {image.dtype}")
    image = image if image.ndim == 3 else image[:, :, None]
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]
    from PIL import Image

    grey = Image.fromarray(image[:, :, :3]).convert("L")
    return np.asarray(grey)[:, :, None]


def _train_epochs(session: Any, context: TrainContext) -> None:
    """Continue from `context.restore` if given, then train and hand over each epoch's
    checkpoint."""
    if context.restore is not None:
        session.load(context.restore / CHECKPOINT_FILE)
    while session.epoch < session.config.epochs:
        metrics = session.train_epoch()
        with tempfile.TemporaryDirectory(prefix="epoch-") as directory:
            session.save(Path(directory) / CHECKPOINT_FILE)
            context.on_epoch(metrics, Path(directory))
