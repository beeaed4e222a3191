"""Ultralytics made safe to run inside a sweep: offline, silent towards Ray Tune, and given an `amp`
setting that never makes it reach the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from visiontune.fileio import write_atomic

AMP_CHECK_WEIGHTS = "yolo26n.pt"  # what ultralytics' float16 check loads (downloads if absent)
# Everything ultralytics could phone home or hand to Ray with, switched off.
OFFLINE_SETTINGS = {
    "sync": False,  # usage analytics
    "raytune": False,  # its callback calls tune.report every epoch: results would double
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "wandb": False,
    "tensorboard": False,  # visiontune's TensorBoard callback writes every trial's curves
}


def offline_ultralytics(config_dir: str | os.PathLike[str] | None = None) -> Any:
    """Import ultralytics offline and without its Ray Tune callback; returns its settings.

    The environment must be set before the first `import ultralytics` (it decides then whether it
    is online and where its settings live), so call this before anything imports it. Safe to call
    again: later calls only re-assert the settings. `config_dir` defaults to the visiontune cache.
    """
    if "ultralytics" not in sys.modules:
        if config_dir is None:
            from visiontune.data import cache_dir

            config_dir = cache_dir() / "ultralytics"
        os.environ["YOLO_OFFLINE"] = "1"  # skip the DNS probe; nothing tries to download
        os.environ["YOLO_AUTOINSTALL"] = "0"  # never pip-install a missing requirement
        # Per-batch progress bars from every trial would flood Ray's driver log; warnings go too
        # (errors still raise). Export YOLO_VERBOSE=True to see ultralytics' own log.
        os.environ.setdefault("YOLO_VERBOSE", "False")
        os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(config_dir).expanduser().resolve()))
    from ultralytics import settings
    from ultralytics.utils import USER_CONFIG_DIR

    _install_font(USER_CONFIG_DIR / "Arial.ttf")
    wanted = {
        **OFFLINE_SETTINGS,
        # Only used for relative paths, which visiontune never passes: keep strays out of the cwd.
        "runs_dir": str(USER_CONFIG_DIR / "runs"),
        "datasets_dir": str(USER_CONFIG_DIR / "datasets"),
        "weights_dir": str(USER_CONFIG_DIR / "weights"),
    }
    if any(settings.get(key) != value for key, value in wanted.items()):
        settings.update(wanted)
    return settings


def _install_font(target: Path) -> None:
    """Ultralytics looks for Arial.ttf before plotting, even with plots=False, and downloads it
    when missing (a 3-s timeout offline); any TTF will do, and matplotlib ships one."""
    if target.exists():
        return
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, font.read_bytes())  # concurrent trials never see half a font


def amp_setting(amp: bool, device: str, weights_dir: Path | None = None) -> bool | str:
    """Ultralytics' `amp` argument for `device`, never one that makes it reach the network.

    With `amp=True` ultralytics trains in float16 only after `check_amp`, which compares float16
    with float32 detections of a yolo26n.pt that it downloads when missing from its weights dir
    (offline: a failed connection, a warning, and float16 unchecked). So, on a GPU:
    * native bfloat16 (Ampere and later): "bf16", bfloat16 autocast without loss scaling, for
      which ultralytics skips the check (bfloat16 has float32's range: the overflow to NaN the
      check guards against does not happen);
    * older GPUs (T4; the CUDA 13 torch wheels start at Turing, sm_75): float16 (True) when
      yolo26n.pt is already in `weights_dir`
      (ultralytics' WEIGHTS_DIR by default), so the check runs offline; else float32 (False).
    """
    if not amp or device == "cpu":
        return False
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16"
    if weights_dir is None:
        offline_ultralytics()
        from ultralytics.utils import WEIGHTS_DIR  # where check_amp looks

        weights_dir = WEIGHTS_DIR
    return (Path(weights_dir) / AMP_CHECK_WEIGHTS).is_file()
