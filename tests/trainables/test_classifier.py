"""Tests for the classifier trainable, on tiny in-memory datasets (no Ray, CPU only)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visiontune.data.imagefolder import ImageDataset, Split
from visiontune.params import config_dict
from visiontune.trainables.classifier import (
    METRICS,
    TASK,
    Config,
    ResBlock,
    Session,
    build_augmentation,
    build_model,
    build_optimizer,
)
from visiontune.trainables.session import CHECKPOINT_FILE

HEIGHT, WIDTH = 24, 40  # not square, so a height/width mix-up changes shapes
NO_AUGMENTATION = dict(
    rotation=0.0, width_shift=0.0, height_shift=0.0, shear=0.0, zoom=0.0, horizontal_flip=False
)
HALF_SHIFT = {**NO_AUGMENTATION, "width_shift": 0.5, "height_shift": 0.5}
TINY = dict(width=4, batch_size=8)


def _split(n: int, rng: np.random.Generator) -> Split:
    """Class 0 dark, class 1 bright, with noise: separable by mean brightness."""
    labels = np.arange(n) % 2
    base = np.where(labels == 0, 50, 200)[:, None, None, None]
    images = base + rng.integers(-30, 30, size=(n, 1, HEIGHT, WIDTH))
    return Split(images.astype(np.uint8), labels.astype(np.int64))


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    rng = np.random.default_rng(0)
    splits = {"train": _split(32, rng), "val": _split(16, rng), "test": _split(16, rng)}
    train = splits["train"].images.astype(np.float32) / 255.0
    return ImageDataset(
        ("dark", "bright"), splits, "mem", (float(train.mean()),), (float(train.std()),)
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread, and spin-waiting threads crawl on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _augment(config: Config, images: torch.Tensor) -> torch.Tensor:
    return build_augmentation(config)(images)


# --- model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["custom", "baseline"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_model_outputs_one_logit_per_class(arch: str, in_channels: int) -> None:
    model = build_model(Config(arch=arch, width=4), in_channels, num_classes=5).eval()
    assert model(torch.rand(3, in_channels, HEIGHT, WIDTH)).shape == (3, 5)


def test_baseline_has_more_parameters_than_custom() -> None:
    def count(arch: str) -> int:
        return sum(p.numel() for p in build_model(Config(arch=arch), 1, 2).parameters())

    assert count("baseline") > count("custom")


def test_every_res_block_applies_block_dropout_and_head_dropout_precedes_final_linear() -> None:
    model = build_model(Config(block_dropout=0.3, head_dropout=0.6, width=4), 1, 3)
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 3
    called: list[nn.Dropout] = []
    for block in blocks:
        drops = [m for m in block.modules() if isinstance(m, nn.Dropout)]
        assert [d.p for d in drops] == [0.3]
        drops[0].register_forward_hook(lambda module, _in, _out: called.append(module))
    assert isinstance(model[-1], nn.Linear)
    assert isinstance(model[-2], nn.Dropout) and model[-2].p == 0.6
    model(torch.rand(2, 1, HEIGHT, WIDTH))
    assert len(called) == len(blocks)  # the dropout sits on the forward path, not just in the tree


# --- augmentation --------------------------------------------------------------------------


def test_augmentation_with_all_ranges_zero_and_no_flip_is_identity() -> None:
    images = torch.rand(8, 1, HEIGHT, WIDTH)
    assert torch.equal(_augment(Config(**NO_AUGMENTATION), images), images)


def test_horizontal_flip_only_mirrors_each_image_or_leaves_it() -> None:
    config = Config(**{**NO_AUGMENTATION, "horizontal_flip": True})
    images = torch.rand(64, 1, HEIGHT, WIDTH)
    out = _augment(config, images)
    kept = [torch.equal(o, x) for o, x in zip(out, images, strict=True)]
    mirrored = [torch.equal(o, x.flip(-1)) for o, x in zip(out, images, strict=True)]
    assert all(k or m for k, m in zip(kept, mirrored, strict=True))
    assert any(kept) and any(mirrored)


def test_augmentation_draws_parameters_per_image() -> None:
    config = Config(**{**NO_AUGMENTATION, "rotation": 40.0})
    out = _augment(config, torch.rand(1, 1, HEIGHT, WIDTH).repeat(16, 1, 1, 1))
    assert not all(torch.allclose(out[0], o) for o in out[1:])


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect"])
def test_edge_fill_modes_keep_a_uniform_image_uniform(fill_mode: str) -> None:
    config = Config(**HALF_SHIFT, fill_mode=fill_mode)
    out = _augment(config, torch.ones(16, 1, HEIGHT, WIDTH))
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)


def test_constant_fill_brings_in_zeros() -> None:
    config = Config(**HALF_SHIFT, fill_mode="constant")
    out = _augment(config, torch.ones(16, 1, HEIGHT, WIDTH))
    assert out.min() < 1e-5


def test_affine_parameters_follow_keras_ranges() -> None:
    config = Config(
        rotation=40.0,
        width_shift=0.25,
        height_shift=0.0,
        shear=10.0,
        zoom=0.2,
        horizontal_flip=False,
    )
    augment = build_augmentation(config)
    augment(torch.rand(512, 1, HEIGHT, WIDTH))
    params = augment[-1]._params
    angle = params["angle"]
    assert angle.abs().max() <= 40.0 and angle.min() < -30.0 and angle.max() > 30.0
    shift = params["translations"]  # pixels, (x, y)
    assert shift[:, 0].abs().max() <= 0.25 * WIDTH and shift[:, 0].abs().max() > 0.2 * WIDTH
    assert torch.all(shift[:, 1] == 0)
    scale = params["scale"]  # x and y zoom drawn independently
    assert scale.min() >= 0.8 and scale.max() <= 1.2
    assert not torch.allclose(scale[:, 0], scale[:, 1])
    shear = params["shear_x"]
    assert shear.abs().max() <= 10.0 and shear.abs().max() > 5.0
    assert torch.all(params["shear_y"] == 0)


# --- optimizer -----------------------------------------------------------------------------


def test_l2_decays_kernels_only_with_twice_lambda() -> None:
    config = Config(l2=3e-4, width=4)
    model = build_model(config, 1, 2)
    optimizer, _ = build_optimizer(model, config)
    by_decay = {group["weight_decay"]: group["params"] for group in optimizer.param_groups}
    assert set(by_decay) == {2 * 3e-4, 0.0}
    kernels = {id(p) for p in model.parameters() if p.ndim > 1}
    others = {id(p) for p in model.parameters() if p.ndim <= 1}
    assert {id(p) for p in by_decay[2 * 3e-4]} == kernels
    assert {id(p) for p in by_decay[0.0]} == others
    batch_norm = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {id(m.weight) for m in batch_norm} <= others
    assert id(model[-1].bias) in others


def _adam_steps(l2: float, explicit_penalty: bool, steps: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(0)
    config = Config(l2=l2, width=4, block_dropout=0.0, head_dropout=0.0, lr=1e-2)
    model = build_model(config, 1, 2)
    if explicit_penalty:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        optimizer, _ = build_optimizer(model, config)
    x = torch.rand(4, 1, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1])
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        if explicit_penalty:
            loss = loss + l2 * sum(p.pow(2).sum() for p in model.parameters() if p.ndim > 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_adam_weight_decay_equals_keras_l2_penalty_on_kernels() -> None:
    l2 = 0.05
    decayed = _adam_steps(l2, explicit_penalty=False)
    penalized = _adam_steps(l2, explicit_penalty=True)
    unregularized = _adam_steps(0.0, explicit_penalty=True)
    for a, b in zip(decayed, penalized, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # the penalty is large enough to be seen at this tolerance, so the check above can fail
    assert not all(
        torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(penalized, unregularized, strict=True)
    )


# --- training ------------------------------------------------------------------------------


def test_lr_is_multiplied_by_decay_factor_after_lr_decay_epoch_epochs(data: ImageDataset) -> None:
    config = Config(**NO_AUGMENTATION, **TINY, lr=1e-2, lr_decay_epoch=2, lr_decay_factor=0.5)
    session = Session(config, data)
    lrs = [session.train_epoch()["lr"] for _ in range(3)]
    assert lrs == pytest.approx([1e-2, 1e-2, 5e-3], rel=1e-12)


def test_training_separates_dark_from_bright_images(data: ImageDataset) -> None:
    session = Session(Config(**NO_AUGMENTATION, **TINY, lr=1e-2), data)
    history = [session.train_epoch() for _ in range(3)]
    assert history[-1]["val_acc"] >= 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]


# --- checkpoints ---------------------------------------------------------------------------


def _epoch_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {key: metrics[key] for key in METRICS}  # images_per_s is wall-clock, not state


def test_checkpoint_loads_with_weights_only_and_holds_full_state(
    data: ImageDataset, tmp_path
) -> None:
    config = Config(**TINY, arch="baseline", l2=2e-4)
    session = Session(config, data)
    session.save(tmp_path / CHECKPOINT_FILE)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config"}
    assert state["scaler"] == {}  # float32 on the CPU: no loss scaling
    assert state["rng"]["cuda"] == []  # a CPU session leaves CUDA alone
    assert state["config"] == config_dict(config)


def test_amp_changes_nothing_on_the_cpu(data: ImageDataset) -> None:
    # default augmentation and dropout: every draw and every float must match
    def train(amp: bool) -> tuple[Session, list[dict[str, float]]]:
        session = Session(Config(**TINY, seed=5, amp=amp), data)  # seeds the global RNG
        return session, [_epoch_metrics(session.train_epoch()) for _ in range(2)]

    (mixed, mixed_history), (full, full_history) = train(True), train(False)
    assert mixed.precision.dtype is None and not mixed.precision.scaler.is_enabled()
    assert mixed_history == full_history
    expected = full.model.state_dict()
    for key, value in mixed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_evaluate_checkpoint_reports_split_loss_and_accuracy(
    data: ImageDataset, tmp_path, on_the_cpu: None
) -> None:
    session = Session(Config(**TINY), data)
    session.save(tmp_path / CHECKPOINT_FILE)
    result = TASK.evaluate_checkpoint(tmp_path, data, "test")
    assert set(result) == {"test_loss", "test_acc"}
    expected = session.evaluate("test")
    assert result["test_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert result["test_acc"] == expected["acc"]


def test_a_split_without_images_measures_nothing_instead_of_zero(
    data: ImageDataset, tmp_path
) -> None:
    empty = Split(data.splits["test"].images[:0], data.splits["test"].labels[:0])
    hollow = ImageDataset(data.classes, {**data.splits, "test": empty}, "mem", data.mean, data.std)
    Session(Config(**TINY), hollow).save(tmp_path / CHECKPOINT_FILE)
    assert TASK.evaluate_checkpoint(tmp_path, hollow, "test") == {
        "test_loss": None,
        "test_acc": None,
    }


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("arch", "vgg"),
        ("fill_mode", "wrap"),
        ("block_dropout", 1.0),
        ("head_dropout", 1.0),
        ("zoom", 1.5),
        ("rotation", -1.0),
        ("lr", 0.0),
        ("lr_decay_factor", 0.0),
        ("batch_size", 0),
    ],
)
def test_config_rejects_invalid_value_naming_the_field(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        Config(**{name: value})


def test_defaults_are_the_seed_custom_configuration() -> None:
    seed = dict(
        arch="custom",
        rotation=40.0,
        width_shift=0.2,
        height_shift=0.2,
        shear=0.2,
        zoom=0.2,
        horizontal_flip=True,
        fill_mode="nearest",
        l2=1e-4,
        block_dropout=0.2,
        head_dropout=0.5,
        lr=1e-4,
        lr_decay_epoch=50,
        lr_decay_factor=0.1,
    )
    defaults = config_dict(Config())
    assert {key: defaults[key] for key in seed} == seed


# --- on a GPU (skipped on CPU-only machines) -----------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_on_a_gpu_the_session_trains_in_mixed_precision_and_resumes(
    data: ImageDataset, tmp_path
) -> None:
    config = Config(**TINY, lr=1e-2)
    session = Session(config, data, "cuda")
    assert session.precision.dtype in (torch.bfloat16, torch.float16)
    assert all(images.is_cuda for images, _ in session.tensors.values())
    metrics = session.train_epoch()
    assert all(math.isfinite(metrics[key]) for key in METRICS)
    session.save(tmp_path / CHECKPOINT_FILE)
    resumed = TASK.load_session(tmp_path, data, "cuda")  # RNG states mapped to the GPU still load
    assert resumed.epoch == 1
    assert resumed.precision.scaler.state_dict() == session.precision.scaler.state_dict()
    assert math.isfinite(resumed.train_epoch()["train_loss"])
    full = Session(Config(**TINY, amp=False), data, "cuda")
    assert full.precision.dtype is None and not full.precision.scaler.is_enabled()
