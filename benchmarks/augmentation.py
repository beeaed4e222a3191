"""Batched kornia augmentation (the classifier's) vs per-sample torchvision in a DataLoader.

Run (from the repository root):

    .venv/bin/python benchmarks/augmentation.py          # 4096 images per pass, 5 passes
    .venv/bin/python benchmarks/augmentation.py --quick  # 1024 images per pass, 3 passes

Goals, on 64-image batches of 1x40x24 uint8 images on the CPU:
  1. `build_augmentation(Config())` (kornia, per-image parameters, one call per batch) is at least
     5x faster in images/s than torchvision.transforms.v2 RandomHorizontalFlip + RandomAffine(
     degrees=40, translate=(0.2, 0.2), scale=(0.8, 1.2), shear=0.2) applied per sample in a
     torch DataLoader;
  2. augmenting a batch takes under 20% of a training step (forward + backward + Adam step of
     `build_model(Config(), 1, 12)` on the same batch).

Same CPU budget for both sides: one thread (`torch.set_num_threads(1)`) and `num_workers=0`, the
way a Tune trial with cpu=1 runs (`run_trial` sets threads to the trial's CPUs). DataLoader
workers would move the per-sample work to other cores, which a cpu=1 trial does not have; per
core it is the same work plus inter-process copies. Both sides start from uint8 and include the conversion to
float in [0, 1] (`to_input`). Every timed variant runs once per pass, passes interleave the
variants so machine-load drift hits all of them alike, and the median pass is reported.

Below the goal lines, clearly labelled, are prototypes and breakdowns used to explain the result:
kornia's ops one at a time, its resample / align_corners flags, the floor set by one
`F.grid_sample` call, and a plain-torch batched affine that draws the same Keras-style parameters,
composes the flip into the affine matrix and warps with one `affine_grid` + `grid_sample`.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from visiontune.trainables.classifier import (
    FILL_MODES,
    Config,
    build_augmentation,
    build_model,
    build_optimizer,
    to_input,
)

GOAL_SPEEDUP = 5.0
GOAL_STEP_SHARE = 0.20
HEIGHT, WIDTH, CLASSES = 40, 24, 12


# --- prototype: batched Keras-style affine in plain torch -------------------------------------


def sample_keras_matrices(batch: int, height: int, width: int, config: Config) -> torch.Tensor:
    """(B, 3, 3) forward pixel-space matrices with kornia's parameter ranges (rotation, x/y
    shift, x shear in degrees, independent x/y zoom) and the horizontal flip composed in."""
    u = torch.rand(batch, 7) * 2 - 1  # one draw for every parameter, in [-1, 1)
    angle = u[:, 0] * math.radians(config.rotation)
    tx, ty = u[:, 1] * config.width_shift * width, u[:, 2] * config.height_shift * height
    shear = torch.tan(u[:, 3] * math.radians(config.shear))
    zx, zy = 1 + u[:, 4] * config.zoom, 1 + u[:, 5] * config.zoom
    flip = torch.where(u[:, 6] < 0, -1.0, 1.0) if config.horizontal_flip else torch.ones(batch)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # A = R @ diag(zx, zy) @ [[1, shear], [0, 1]] @ diag(flip, 1), about the image centre
    a = torch.stack([cos * zx * flip, (cos * zx * shear - sin * zy)], 1)
    b = torch.stack([sin * zx * flip, (sin * zx * shear + cos * zy)], 1)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    matrix = torch.zeros(batch, 3, 3)
    matrix[:, 0, :2], matrix[:, 1, :2], matrix[:, 2, 2] = a, b, 1.0
    matrix[:, 0, 2] = cx + tx - a[:, 0] * cx - a[:, 1] * cy
    matrix[:, 1, 2] = cy + ty - b[:, 0] * cx - b[:, 1] * cy
    return matrix


def warp_batch(images: torch.Tensor, matrix: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Warp by forward pixel matrices (as kornia's warp_affine, align_corners=False)."""
    _, _, height, width = images.shape
    # pixel -> normalized coordinates of grid_sample with align_corners=False
    norm = torch.tensor([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]])
    theta = norm @ torch.linalg.inv(matrix) @ torch.linalg.inv(norm)
    grid = F.affine_grid(theta[:, :2], list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )


class KerasAffine(nn.Module):
    """The prototype as a module: `build_augmentation(config)`'s distribution in one warp."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.padding_mode = FILL_MODES[config.fill_mode]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, _, height, width = images.shape
        matrix = sample_keras_matrices(len(images), height, width, self.config)
        return warp_batch(images, matrix, self.padding_mode)


def kornia_matrices(augment: nn.Sequential) -> torch.Tensor:
    """The forward pixel matrices kornia used in its last call (flip then affine)."""
    matrix = None
    for op in augment:
        matrix = op.transform_matrix if matrix is None else op.transform_matrix @ matrix
    return matrix


# --- timing ---------------------------------------------------------------------------------


def batches(images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(images.split(batch_size))


def time_batched(augment: Callable[[torch.Tensor], torch.Tensor], chunks: list) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for chunk in chunks:
            augment(to_input(chunk))
    return time.perf_counter() - start


class PerSample(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, transform: Callable) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(to_input(self.images[index]))


def time_loader(loader: torch.utils.data.DataLoader) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def torchvision_transform(interpolation: str) -> Callable:
    from torchvision.transforms import InterpolationMode, v2

    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(
                degrees=40,
                translate=(0.2, 0.2),
                scale=(0.8, 1.2),
                shear=0.2,
                interpolation=InterpolationMode[interpolation.upper()],
            ),
        ]
    )


def time_train_steps(chunks: list[torch.Tensor], labels: torch.Tensor) -> float:
    """Seconds for forward + backward + Adam step over `chunks` (no augmentation)."""
    config = Config()
    model = build_model(config, 1, CLASSES).train()
    optimizer, _ = build_optimizer(model, config)
    inputs = [to_input(chunk) for chunk in chunks]
    start = time.perf_counter()
    for x, y in zip(inputs, labels.split(len(chunks[0])), strict=True):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1024 images, 3 passes (< 60 s)")
    parser.add_argument("--images", type=int, default=None, help="per pass, default 4096")
    parser.add_argument("--passes", type=int, default=None, help="default 5 (3 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    n_images = args.images or (1024 if args.quick else 4096)
    passes = args.passes or (3 if args.quick else 5)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n_images, 1, HEIGHT, WIDTH), dtype=torch.uint8)
    labels = torch.randint(0, CLASSES, (n_images,))
    chunks = batches(images, args.batch_size)
    config = Config()
    seed_augment = build_augmentation(config)
    flip, affine = seed_augment[0], seed_augment[1]
    padding = FILL_MODES[config.fill_mode]

    def kornia_affine(**flags: object) -> nn.Module:
        lo, hi = 1 - config.zoom, 1 + config.zoom
        import kornia.augmentation as K

        return K.RandomAffine(
            degrees=config.rotation,
            translate=(config.width_shift, config.height_shift),
            scale=(lo, hi, lo, hi),
            shear=config.shear,
            padding_mode=padding,
            p=1.0,
            **flags,
        )

    def grid_sample_only(x: torch.Tensor) -> torch.Tensor:
        return warp_batch(x, fixed_matrix[: len(x)], padding)

    fixed_matrix = sample_keras_matrices(args.batch_size, HEIGHT, WIDTH, config)
    loader_kw = dict(batch_size=args.batch_size, shuffle=False, num_workers=0)
    timed: dict[str, Callable[[], float]] = {
        "seed kornia (flip + affine)": lambda: time_batched(seed_augment, chunks),
        "torchvision v2 per sample, nearest": lambda: time_loader(
            torch.utils.data.DataLoader(
                PerSample(images, torchvision_transform("nearest")), **loader_kw
            )
        ),
        "torchvision v2 per sample, bilinear": lambda: time_loader(
            torch.utils.data.DataLoader(
                PerSample(images, torchvision_transform("bilinear")), **loader_kw
            )
        ),
        "train step (fwd + bwd + Adam)": lambda: time_train_steps(chunks, labels),
        "kornia flip alone": lambda: time_batched(flip, chunks),
        "kornia affine alone": lambda: time_batched(affine, chunks),
        "kornia affine, resample=nearest": lambda: time_batched(
            kornia_affine(resample="nearest"), chunks
        ),
        "kornia affine, align_corners=True": lambda: time_batched(
            kornia_affine(align_corners=True), chunks
        ),
        "to_input only (uint8 -> float)": lambda: time_batched(lambda x: x, chunks),
        "affine_grid + grid_sample only": lambda: time_batched(grid_sample_only, chunks),
        "prototype KerasAffine (flip in matrix)": lambda: time_batched(KerasAffine(config), chunks),
    }
    runs: dict[str, list[float]] = {name: [] for name in timed}
    for measure in timed.values():  # warm-up: first calls pay one-off setup
        measure()
    for _ in range(passes):
        for name, measure in timed.items():
            runs[name].append(measure())
    seconds = {name: statistics.median(values) for name, values in runs.items()}

    # correctness of the prototype's warp: kornia's own matrices through warp_batch
    check = to_input(chunks[0])
    with torch.no_grad():
        expected = seed_augment(check)
        got = warp_batch(check, kornia_matrices(seed_augment), padding)
    max_diff = float((expected - got).abs().max())

    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, DataLoader "
        f"num_workers=0; load average: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{n_images} images 1x{HEIGHT}x{WIDTH} uint8 per pass in batches of {args.batch_size}, "
        f"median of {passes} passes\n"
    )
    per_batch = {name: s / len(chunks) * 1000 for name, s in seconds.items()}
    step = per_batch["train step (fwd + bwd + Adam)"]
    print(f"{'':<42}{'images/s':>10}{'ms/batch':>10}{'% of step':>11}")
    for name in timed:
        if name == "kornia flip alone":
            print("--- breakdown and prototypes (explain the result; not the goals) ---")
        print(
            f"{name:<42}{n_images / seconds[name]:>10.0f}{per_batch[name]:>10.2f}"
            f"{100 * per_batch[name] / step:>10.1f}%"
        )
    seed = seconds["seed kornia (flip + affine)"]
    speedup = seconds["torchvision v2 per sample, nearest"] / seed
    speedup_bilinear = seconds["torchvision v2 per sample, bilinear"] / seed
    share = per_batch["seed kornia (flip + affine)"] / step
    proto = seconds["prototype KerasAffine (flip in matrix)"]
    print()
    print(
        f"goal 1: seed kornia vs per-sample torchvision: {speedup:.2f}x (nearest), "
        f"{speedup_bilinear:.2f}x (bilinear); need >= {GOAL_SPEEDUP:.0f}x: "
        f"{'MET' if speedup >= GOAL_SPEEDUP else 'missed'}"
    )
    print(
        f"goal 2: seed kornia = {100 * share:.1f}% of a training step; need < "
        f"{100 * GOAL_STEP_SHARE:.0f}%: {'MET' if share < GOAL_STEP_SHARE else 'missed'}"
    )
    print(
        f"prototype: {seed / proto:.2f}x faster than seed kornia, "
        f"{seconds['torchvision v2 per sample, nearest'] / proto:.2f}x faster than per-sample "
        f"torchvision, {100 * proto / len(chunks) * 1000 / step:.1f}% of a step; its warp on "
        f"kornia's own matrices differs from kornia's output by at most {max_diff:.1e}"
    )


if __name__ == "__main__":
    main()
