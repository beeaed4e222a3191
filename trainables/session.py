"""What every plain-PyTorch Session shares: its numeric precision on the device, host-to-device
copies, and a complete checkpoint (model, optimizer, LR schedule, gradient scaler, epoch, RNG
states, resolved config) that restores the same run, loaded with weights_only=True.

On the CPU a session computes in float32 exactly as a plain training loop would: no autocast, a
disabled GradScaler (whose scale/step/update are the plain backward and optimizer step) and plain
`.to(device)` copies. Mixed precision and pinned, asynchronous copies apply on CUDA only.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visiontune.params import config_dict


@dataclass(frozen=True)
class Precision:
    """How a session computes on its device: the autocast dtype (None: float32 throughout) and
    the GradScaler that float16 needs (disabled for float32 and bfloat16)."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @classmethod
    def choose(cls, device: torch.device, amp: bool, allow_bf16: bool = True) -> Precision:
        """Mixed precision when `amp` and the device is CUDA: bfloat16 where the GPU computes it
        natively (Ampere and later; it keeps float32's range, so no loss scaling), else float16
        with a GradScaler. `including_emulation=False`: a T4 or V100 "supports" bfloat16 only
        by emulation, slower than float32. Anything else, CPU included: float32."""
        dtype = None
        if amp and device.type == "cuda":
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
            dtype = torch.bfloat16 if allow_bf16 and native_bf16 else torch.float16
        return cls(dtype, torch.amp.GradScaler("cuda", enabled=dtype == torch.float16))

    def autocast(self) -> AbstractContextManager:
        """The context for forward passes and losses (a no-op in float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)

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
    """`tensor.to(device)`. A CPU tensor bound for a GPU is first pinned (page-locked), so the
    copy runs asynchronously behind the work already queued instead of stalling the host."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


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
                # on a GPU, dropout and augmentation draw from the CUDA generator; a CPU session
                # leaves CUDA alone (touching it would put a context on a GPU it was not given)
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            },
            "config": config_dict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # Absent from checkpoints older than AMP, and empty from float32/bfloat16 runs: then the
        # scaler keeps its initial state (an enabled GradScaler refuses an empty state).
        if state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        # RNG states must be CPU byte tensors, wherever torch.load's map_location put them
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in rng["cuda"]])
        self.generator.set_state(rng["generator"].cpu())

    def save(self, path: Path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
