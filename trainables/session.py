"""What every plain-PyTorch Session shares: a complete checkpoint (model, optimizer, LR schedule,
epoch, RNG states, resolved config) that restores the same run, loaded with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visiontune.params import config_dict


class CheckpointedSession:
    """Mixin for sessions with `model`, `optimizer`, `scheduler`, `epoch`, `generator` (the
    session's own torch.Generator for shuffling/augmentation), `config` and `device`."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "rng": {
                "torch": torch.get_rng_state(),  # dropout, kornia draws, RoI/anchor sampling
                "generator": self.generator.get_state(),  # shuffling and batch augmentation
                # on a GPU, dropout and augmentation draw from the CUDA generator
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "config": config_dict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.generator.set_state(state["rng"]["generator"])

    def save(self, path: Path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
