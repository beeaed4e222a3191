"""Tests for the Faster R-CNN trainable, on tiny in-memory detection sets (bright rectangles on a
dark noisy ground, 64 px), offline, on the CPU; one test runs it through a real local Ray Tune."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support import no_network
from torch import nn
from torchvision.models.detection import (
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
)

from visiontune.data.detection import DetectionDataset, DetectionSplit
from visiontune.params import config_dict
from visiontune.trainables.faster_rcnn import METRICS, TASK, Config, Session
from visiontune.trainables.faster_rcnn.augment import Augmentation, hflip, scale_jitter
from visiontune.trainables.faster_rcnn.data import prepare_split, to_target
from visiontune.trainables.faster_rcnn.engine import LOSSES, compute_map, train_one_epoch
from visiontune.trainables.faster_rcnn.model import (
    autocast_backbone,
    build_model,
    build_optimizer,
)
from visiontune.trainables.session import CHECKPOINT_FILE, FULL_PRECISION, Precision

NAMES = ("hot", "warm", "rare")  # "rare" has boxes in train only: absent from val and test
SIZE = 64
BRIGHTNESS = (230, 150, 100)  # per class, over a ground of 20..60
COUNTS = {"train": 8, "val": 4, "test": 4}
# Small sampling sizes keep a step well under a second; the loss still falls within epochs.
TINY = dict(
    box_batch_size_per_image=32,
    rpn_batch_size_per_image=64,
    rpn_post_nms_top_n_test=50,
    warmup_epochs=0.0,
    lr=0.01,
    batch_size=4,
)
NO_AUGMENTATION = dict(hflip=0.0, scale_jitter=0.0, brightness=0.0, contrast=0.0)


# --- a tiny dataset ------------------------------------------------------------------------


def _split(name: str, count: int, rng: np.random.Generator) -> DetectionSplit:
    images, boxes, labels = [], [], []
    for index in range(count):
        image = rng.integers(20, 60, (SIZE, SIZE)).astype(np.uint8)
        classes = [] if name == "train" and index == 3 else [index % 2, (index + 1) % 2]
        if name == "train" and index % 4 == 0:
            classes.append(2)
        rows = []
        for slot, label in enumerate(classes):  # one box per horizontal band: no overlaps
            w, h = (int(v) for v in rng.integers(10, 20, 2))
            x0 = int(rng.integers(0, SIZE - w))
            y0 = slot * SIZE // len(classes) + int(rng.integers(0, SIZE // len(classes) - h + 1))
            image[y0 : y0 + h, x0 : x0 + w] = BRIGHTNESS[label]
            rows.append([(x0 + w / 2) / SIZE, (y0 + h / 2) / SIZE, w / SIZE, h / SIZE])
        images.append(image)
        boxes.append(np.array(rows, dtype=np.float32).reshape(-1, 4))
        labels.append(np.array(classes, dtype=np.int64))
    return DetectionSplit(images, boxes, labels, [f"{name}/{i}.png" for i in range(count)])


@pytest.fixture(scope="module")
def data() -> DetectionDataset:
    rng = np.random.default_rng(0)
    splits = {name: _split(name, count, rng) for name, count in COUNTS.items()}
    return DetectionDataset(NAMES, splits, "tiny", Path("/nonexistent/data.yaml"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small convolutions run fastest on one thread, and spin-waiting threads crawl on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _box_image(boxes: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(1, 1, size, size) float image: 1 inside the integer-aligned boxes, 0 elsewhere."""
    image = torch.zeros(1, 1, size, size)
    for x0, y0, x1, y1 in boxes.round().long().tolist():
        image[..., y0:y1, x0:x1] = 1.0
    return image


def _bright_extent(image: torch.Tensor, threshold: float = 0.5) -> list[float]:
    """x0, y0, x1, y1 (pixel edges) of the pixels above `threshold`."""
    ys, xs = torch.nonzero(image[0, 0] > threshold, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# --- data conversion -----------------------------------------------------------------------


def test_to_target_converts_normalised_cxcywh_to_pixel_xyxy_and_shifts_labels() -> None:
    boxes = np.array([[0.5, 0.5, 0.5, 0.25], [0.1, 0.2, 0.2, 0.4]], dtype=np.float32)
    xyxy, labels = to_target(boxes, np.array([0, 4]), height=64, width=128)
    expected = torch.tensor([[32.0, 24.0, 96.0, 40.0], [0.0, 0.0, 25.6, 25.6]])
    assert torch.allclose(xyxy, expected)
    assert labels.tolist() == [1, 5]  # 0 is torchvision's background
    assert xyxy.dtype == torch.float32 and labels.dtype == torch.int64


def test_to_target_clips_to_the_image_and_drops_degenerate_boxes() -> None:
    boxes = np.array(
        [
            [0.5, 0.5, 0.0, 0.2],  # zero width
            [0.5, 0.5, 0.2, 0.005],  # 0.3 px high
            [1.0, 1.0, 0.5, 0.5],  # a quarter outside: clipped, kept
            [1.2, 0.5, 0.2, 0.2],  # wholly outside
        ],
        dtype=np.float32,
    )
    xyxy, labels = to_target(boxes, np.array([0, 1, 2, 3]), height=64, width=64)
    assert torch.allclose(xyxy, torch.tensor([[48.0, 48.0, 64.0, 64.0]]))
    assert labels.tolist() == [3]


def test_images_without_boxes_give_empty_targets_of_the_right_shape() -> None:
    xyxy, labels = to_target(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 64, 64)
    assert xyxy.shape == (0, 4) and labels.shape == (0,)


def test_prepare_split_resizes_odd_images_to_the_common_size() -> None:
    images = [np.zeros((32, 48), np.uint8), np.full((64, 96), 200, np.uint8)]
    boxes = [np.array([[0.5, 0.5, 0.5, 0.5]], np.float32)] * 2
    split = DetectionSplit(images, boxes, [np.array([0])] * 2, ["a", "b"])
    prepared = prepare_split(split, (32, 48))
    assert prepared.images.shape == (2, 1, 32, 48) and prepared.images.dtype == torch.uint8
    assert int(prepared.images[1].min()) == 200
    assert torch.allclose(prepared.boxes[1], torch.tensor([[12.0, 8.0, 36.0, 24.0]]))


# --- augmentation --------------------------------------------------------------------------


def test_hflip_mirrors_boxes_with_their_images() -> None:
    boxes = torch.tensor([[5.0, 10.0, 20.0, 30.0], [40.0, 2.0, 63.0, 9.0]])
    image = _box_image(boxes)
    flipped, (moved,) = hflip(image, [boxes], torch.tensor([True]))
    assert torch.equal(moved, torch.tensor([[44.0, 10.0, 59.0, 30.0], [1.0, 2.0, 24.0, 9.0]]))
    assert torch.equal(flipped, _box_image(moved))
    kept, (same,) = hflip(image, [boxes], torch.tensor([False]))
    assert torch.equal(kept, image) and torch.equal(same, boxes)


def test_hflip_probability_flips_some_images_of_a_batch_and_not_others() -> None:
    boxes = [torch.tensor([[4.0, 4.0, 14.0, 20.0]])] * 64
    images = _box_image(boxes[0]).repeat(64, 1, 1, 1)
    labels = [torch.tensor([1])] * 64
    generator = torch.Generator().manual_seed(0)
    out, moved, _ = Augmentation(hflip=0.5)(images, boxes, labels, generator)
    flipped = [not torch.equal(o, images[0]) for o in out]
    assert 10 < sum(flipped) < 54
    for image, image_boxes, was_flipped in zip(out, moved, flipped, strict=True):
        assert torch.equal(image[None], _box_image(image_boxes[:, :4]))
        assert was_flipped == (image_boxes[0, 0].item() == 50.0)


@pytest.mark.parametrize("seed", range(4))
def test_scale_jitter_moves_boxes_with_the_pixels(seed: int) -> None:
    box = torch.tensor([[20.0, 16.0, 36.0, 40.0]])
    images = _box_image(box).repeat(8, 1, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    out, boxes, labels = scale_jitter(images, [box] * 8, [torch.tensor([1])] * 8, 0.4, generator)
    assert out.shape == images.shape
    sizes = set()
    for image, image_boxes, image_labels in zip(out, boxes, labels, strict=True):
        assert image_boxes.shape == (1, 4) and image_labels.tolist() == [1]
        extent = torch.tensor(_bright_extent(image[None]))
        assert torch.allclose(extent, image_boxes[0], atol=1.0), (extent, image_boxes)
        sizes.add(round(float(image_boxes[0, 2] - image_boxes[0, 0]), 3))
    assert len(sizes) == 8  # a zoom drawn per image


def test_scale_jitter_drops_boxes_pushed_out_of_the_frame() -> None:
    # zooms up to x1.9 push corner boxes out of the frame, zooms down to x0.1 shrink them
    # below a pixel: either way many are dropped, and what stays is clipped to the frame
    corners = torch.tensor([[0.0, 0.0, 8.0, 8.0], [56.0, 56.0, 64.0, 64.0]])
    images = _box_image(corners).repeat(16, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    _, boxes, labels = scale_jitter(
        images, [corners] * 16, [torch.tensor([1, 2])] * 16, 0.9, generator
    )
    kept = sum(len(b) for b in boxes)
    assert kept < 32
    for image_boxes, image_labels in zip(boxes, labels, strict=True):
        assert len(image_boxes) == len(image_labels)
        assert torch.all(image_boxes >= 0) and torch.all(image_boxes <= SIZE)
        assert torch.all(image_boxes[:, 2:] - image_boxes[:, :2] >= 1.0)


def test_intensity_jitter_changes_levels_not_boxes_and_keeps_grey_images_grey() -> None:
    boxes = [torch.tensor([[4.0, 4.0, 14.0, 20.0]])] * 8
    labels = [torch.tensor([1])] * 8
    grey = (0.2 + 0.6 * _box_image(boxes[0])).repeat(8, 3, 1, 1)
    generator = torch.Generator().manual_seed(0)
    out, out_boxes, _ = Augmentation(brightness=0.2, contrast=0.5)(grey, boxes, labels, generator)
    assert out_boxes == boxes
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert out.min() >= 0.0 and out.max() <= 1.0
    levels = {round(float(image.max()), 4) for image in out}
    assert len(levels) > 4


def test_augmentation_is_a_function_of_the_generator_seed() -> None:
    boxes = [torch.tensor([[4.0, 4.0, 14.0, 20.0]])] * 4
    labels = [torch.tensor([1])] * 4
    images = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    augment = Augmentation(hflip=0.5, scale_jitter=0.3, brightness=0.1, contrast=0.2)

    def draw(seed: int):
        return augment(images, boxes, labels, torch.Generator().manual_seed(seed))

    a, b, c = draw(0), draw(0), draw(1)
    assert torch.equal(a[0], b[0]) and all(map(torch.equal, a[1], b[1]))
    assert not torch.equal(a[0], c[0])


# --- model ---------------------------------------------------------------------------------


@pytest.mark.slow  # trains Faster R-CNN
@pytest.mark.parametrize("backbone", ["mobilenet_v3_large_fpn", "resnet50_fpn"])
def test_model_builds_and_trains_without_any_network_access(
    backbone: str, data: DetectionDataset
) -> None:
    with no_network() as attempts:
        model = build_model(Config(backbone=backbone, **TINY), len(NAMES), (SIZE, SIZE))
        split = prepare_split(data.splits["train"], (SIZE, SIZE))
        images = [split.images[i].float().div(255).expand(3, -1, -1) for i in range(2)]
        targets = [{"boxes": split.boxes[i], "labels": split.labels[i]} for i in range(2)]
        losses = model(images, targets)
        sum(losses.values()).backward()
    assert attempts == []
    assert set(losses) == set(LOSSES)
    assert model.roi_heads.box_predictor.cls_score.out_features == len(NAMES) + 1
    assert model.transform.min_size == (SIZE,) and model.transform.max_size == SIZE


@pytest.mark.parametrize(
    ("backbone", "stride", "builder"),
    [
        ("mobilenet_v3_large_fpn", 32, fasterrcnn_mobilenet_v3_large_fpn),
        ("resnet50_fpn", 4, fasterrcnn_resnet50_fpn),
    ],
)
def test_model_is_torchvisions_builder_at_its_strides_with_batch_norm(
    backbone: str, stride: int, builder: Any
) -> None:
    config = Config(backbone=backbone, finest_stride=stride, norm="batch", anchor_scale=1.0)
    ours = build_model(config, len(NAMES), (SIZE, SIZE))
    reference = builder(weights=None, weights_backbone=None, num_classes=len(NAMES) + 1)
    shapes = {key: value.shape for key, value in ours.state_dict().items()}
    assert shapes == {key: value.shape for key, value in reference.state_dict().items()}
    assert [type(m) for m in ours.modules()] == [type(m) for m in reference.modules()]
    for attribute in ("sizes", "aspect_ratios"):
        expected = getattr(reference.rpn.anchor_generator, attribute)
        assert getattr(ours.rpn.anchor_generator, attribute) == expected


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large_fpn", "resnet50_fpn"])
def test_finest_stride_sets_the_resolution_of_the_first_feature_map(backbone: str) -> None:
    for stride in (8, 16):
        model = build_model(Config(backbone=backbone, finest_stride=stride), 2, (SIZE, SIZE))
        features = model.backbone(torch.rand(1, 3, SIZE, SIZE))
        assert next(iter(features.values())).shape[-2:] == (SIZE // stride, SIZE // stride)
        assert len(features) == len(model.rpn.anchor_generator.sizes)


def test_anchor_scale_shrinks_the_anchors_but_keeps_their_count() -> None:
    reference = build_model(Config(anchor_scale=1.0), 2, (SIZE, SIZE)).rpn.anchor_generator
    halved = build_model(Config(anchor_scale=0.5), 2, (SIZE, SIZE)).rpn.anchor_generator
    assert halved.sizes[0] == tuple(s / 2 for s in reference.sizes[0])
    assert halved.num_anchors_per_location() == reference.num_anchors_per_location()


def test_group_norm_replaces_every_batch_norm_unless_batch_norm_is_asked_for() -> None:
    def norms(config: Config) -> set[type]:
        model = build_model(config, 2, (SIZE, SIZE))
        return {type(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)}

    for backbone in ("mobilenet_v3_large_fpn", "resnet50_fpn"):
        assert norms(Config(backbone=backbone)) == {nn.GroupNorm}
        assert norms(Config(backbone=backbone, norm="batch")) == {nn.BatchNorm2d}


@pytest.mark.parametrize(
    ("backbone", "layers"), [("mobilenet_v3_large_fpn", 2), ("resnet50_fpn", 3)]
)
def test_trainable_backbone_layers_freezes_the_lower_stages_only(
    backbone: str, layers: int
) -> None:
    model = build_model(
        Config(backbone=backbone, trainable_backbone_layers=layers), 2, (SIZE, SIZE)
    )
    body = dict(model.backbone.body.named_parameters())
    frozen = [name for name, p in body.items() if not p.requires_grad]
    assert frozen and len(frozen) < len(body)
    first = "0." if backbone.startswith("mobilenet") else "conv1."
    assert any(name.startswith(first) for name in frozen)
    assert all(p.requires_grad for p in model.rpn.parameters())
    assert all(p.requires_grad for p in model.roi_heads.parameters())
    everything = build_model(Config(backbone=backbone), 2, (SIZE, SIZE))
    assert all(p.requires_grad for p in everything.parameters())


def test_lr_warms_up_linearly_per_step_then_decays_at_the_epoch() -> None:
    config = Config(lr=0.1, warmup_epochs=0.5, warmup_factor=0.1, lr_decay_epoch=2)
    optimizer, scheduler = build_optimizer(torch.nn.Linear(2, 2), config, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.01, 0.055] + [0.1] * 6 + [0.01] * 4
    assert lrs == pytest.approx(expected, rel=1e-9)


# --- metrics -------------------------------------------------------------------------------


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[2.0, 2.0, 20.0, 30.0], [30.0, 5.0, 60.0, 25.0]]),
         "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[10.0, 40.0, 30.0, 60.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]  # fmt: skip


def test_predictions_equal_to_the_ground_truth_score_exactly_one() -> None:
    targets = _targets()
    predictions = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    result = compute_map(predictions, targets, NAMES)
    assert result["map"] == result["map50"] == result["ar100"] == 1.0
    assert result["per_class_ap"] == {"hot": 1.0, "warm": 1.0, "rare": None}


def test_shifted_predictions_score_by_iou_and_classes_without_ground_truth_are_none() -> None:
    # shifted 3 px: IoU 0.592 and 0.566 for the "hot" boxes, 0.619 for the "warm" one, so "hot"
    # matches at the thresholds .50 and .55 of ten (AP 0.2), "warm" at .50, .55, .60 (AP 0.3)
    targets = _targets()
    predictions = [
        {"boxes": t["boxes"] + 3.0, "scores": torch.full((len(t["labels"]),), 0.9),
         "labels": t["labels"]}
        for t in targets
    ]  # fmt: skip
    predictions[2] = {  # a confident "rare" detection where there is nothing: torchmetrics -1
        "boxes": torch.tensor([[5.0, 5.0, 15.0, 15.0]]),
        "scores": torch.tensor([0.8]),
        "labels": torch.tensor([3]),
    }
    result = compute_map(predictions, targets, NAMES)
    assert result["map50"] == 1.0
    assert result["map"] == pytest.approx(0.25) and result["ar100"] == pytest.approx(0.25)
    assert result["per_class_ap"] == {
        "hot": pytest.approx(0.2),
        "warm": pytest.approx(0.3),
        "rare": None,
    }


def test_a_split_without_any_ground_truth_gives_nan_not_minus_one() -> None:
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    prediction = [{**empty[0], "scores": torch.zeros(0)}]
    result = compute_map(prediction, empty, NAMES)
    assert all(math.isnan(result[key]) for key in ("map", "map50", "ar100"))
    assert result["per_class_ap"] == dict.fromkeys(NAMES)


# --- training ------------------------------------------------------------------------------


@pytest.mark.slow  # 6 epochs of Faster R-CNN, the costliest test outside the Ray ones
def test_training_reduces_the_loss_on_an_easy_set(data: DetectionDataset) -> None:
    torch.manual_seed(0)
    config = Config(**TINY, **NO_AUGMENTATION)
    split = prepare_split(data.splits["train"], (SIZE, SIZE))
    model = build_model(config, len(NAMES), (SIZE, SIZE))
    optimizer, scheduler = build_optimizer(model, config, steps_per_epoch=2)
    generator = torch.Generator().manual_seed(0)
    history = [
        train_one_epoch(model, split, optimizer, scheduler, Augmentation(), 4, generator)
        for _ in range(6)
    ]
    assert all(set(h) == {"loss", *LOSSES, "lr"} for h in history)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert history[-1]["loss_objectness"] < history[0]["loss_objectness"]


def _epoch_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {key: metrics[key] for key in METRICS}  # images_per_s is wall-clock, not state


@pytest.mark.slow  # trains Faster R-CNN
def test_amp_changes_nothing_on_the_cpu(data: DetectionDataset) -> None:
    config = dict(TINY, scale_jitter=0.3, brightness=0.1, seed=4)  # augmentation draws matter

    def train(amp: bool) -> tuple[Session, dict[str, float]]:
        session = Session(Config(**config, amp=amp), data)  # seeds the global RNG
        return session, _epoch_metrics(session.train_epoch())

    (mixed, mixed_metrics), (full, full_metrics) = train(True), train(False)
    assert mixed.precision.dtype is None and not mixed.precision.scaler.is_enabled()
    assert mixed_metrics == full_metrics
    expected = full.model.state_dict()
    for key, value in mixed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_checkpoint_loads_with_weights_only_and_holds_full_state(
    data: DetectionDataset, tmp_path
) -> None:
    config = Config(**TINY, trainable_backbone_layers=3)
    Session(config, data).save(tmp_path / CHECKPOINT_FILE)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config"}
    assert state["scaler"] == {}  # float32 on the CPU: no loss scaling
    assert state["config"] == config_dict(config)


@pytest.mark.slow  # trains Faster R-CNN
def test_load_session_and_evaluate_checkpoint_rebuild_the_saved_run(
    data: DetectionDataset, tmp_path, on_the_cpu: None
) -> None:
    config = Config(**TINY, seed=7)
    session = Session(config, data)
    session.train_epoch()
    session.save(tmp_path / CHECKPOINT_FILE)
    loaded = TASK.load_session(tmp_path, data)
    assert loaded.config == config and loaded.epoch == 1
    expected = session.evaluate("test")
    assert loaded.evaluate("test") == expected

    with pytest.raises(ValueError, match="split"):
        loaded.evaluate("holdout")
    result = TASK.evaluate_checkpoint(tmp_path, data, "test")
    assert set(result) == {"test_map", "test_map50", "test_ar100", "per_class"}
    assert result["test_map"] == pytest.approx(expected["map"])
    assert result["test_ar100"] == pytest.approx(expected["ar100"])
    assert list(result["per_class"]) == list(NAMES)
    assert result["per_class"]["rare"] == {"ap": None}
    assert all(0.0 <= result["per_class"][n]["ap"] <= 1.0 for n in ("hot", "warm"))


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("backbone", "vgg16"),
        ("norm", "layer"),
        ("finest_stride", 2),
        ("trainable_backbone_layers", 7),
        ("trainable_backbone_layers", -1),
        ("lr", 0.0),
        ("momentum", 1.5),
        ("weight_decay", -1e-4),
        ("warmup_epochs", -0.5),
        ("warmup_factor", 0.0),
        ("lr_decay_factor", 0.0),
        ("lr_decay_epoch", 0),
        ("batch_size", 0),
        ("hflip", 1.2),
        ("scale_jitter", 1.0),
        ("brightness", -0.1),
        ("contrast", 1.0),
        ("anchor_scale", 0.0),
        ("box_batch_size_per_image", 0),
        ("score_threshold", 1.0),
        ("detections_per_img", 0),
    ],
)
def test_config_rejects_invalid_value_naming_the_field(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        Config(**{name: value})


def test_resnet_backbone_has_five_stages_to_train() -> None:
    Config(backbone="resnet50_fpn", trainable_backbone_layers=5)
    with pytest.raises(ValueError, match="trainable_backbone_layers"):
        Config(backbone="resnet50_fpn", trainable_backbone_layers=6)


def test_defaults_are_the_torchvision_reference_recipe_at_the_seed_batch() -> None:
    reference = dict(
        batch_size=2,
        lr=0.02 * 2 / 16,
        momentum=0.9,
        weight_decay=1e-4,
        warmup_factor=0.001,
        hflip=0.5,
        scale_jitter=0.0,
        brightness=0.0,
        contrast=0.0,
    )
    defaults = config_dict(Config())
    assert {key: defaults[key] for key in reference} == pytest.approx(reference, rel=1e-12)


# --- on a GPU (skipped on CPU-only machines) -----------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_training_uses_float16_with_a_scaler_that_the_checkpoint_keeps(
    data: DetectionDataset, tmp_path
) -> None:
    session = Session(Config(**TINY), data, "cuda")
    assert session.precision.dtype == torch.float16  # as torchvision's reference, backbone only
    assert session.precision.scaler.is_enabled()
    assert session.tensors["train"].images.is_cuda
    assert not session.tensors["train"].boxes[0].is_cuda  # moved per batch
    metrics = session.train_epoch()
    assert all(math.isfinite(metrics[key]) for key in METRICS)
    session.save(tmp_path / CHECKPOINT_FILE)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["scaler"]["scale"] == session.precision.scaler.get_scale()
    resumed = TASK.load_session(tmp_path, data, "cuda")
    assert resumed.precision.scaler.state_dict() == session.precision.scaler.state_dict()
    assert set(resumed.evaluate("test")) == {"map", "map50", "ar100", "per_class_ap"}


# --- mixed precision: the backbone only ----------------------------------------------------


def test_mixed_precision_runs_the_backbone_only_and_decodes_boxes_in_float32(
    data: DetectionDataset,
) -> None:
    """bfloat16 CPU autocast stands in for a GPU's float16: the backbone computes in it, and
    the anchors, both heads and the detections stay float32."""
    torch.manual_seed(0)
    model = build_model(Config(**TINY), len(NAMES), (SIZE, SIZE)).eval()
    keys = set(model.state_dict())
    precision = Precision(torch.bfloat16, torch.amp.GradScaler("cpu", enabled=False), "cpu")
    autocast_backbone(model, precision)
    assert set(model.state_dict()) == keys  # checkpoints stay interchangeable
    dtypes: dict[str, Any] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            while not isinstance(output, torch.Tensor):  # the first tensor of lists and dicts
                output = next(iter(output.values() if isinstance(output, dict) else output))
            dtypes[name] = output.dtype

        return hook

    model.backbone.body.register_forward_hook(record("backbone body"))
    model.rpn.anchor_generator.register_forward_hook(record("anchors"))
    model.rpn.head.register_forward_hook(record("rpn head"))
    model.roi_heads.box_head.register_forward_hook(record("box head"))
    model.roi_heads.box_predictor.register_forward_hook(record("box predictor"))
    images = prepare_split(data.splits["val"], (SIZE, SIZE)).images[:2]
    with torch.no_grad():
        detections = model([image.float() / 255 for image in images])
    assert dtypes == {
        "backbone body": torch.bfloat16,
        "anchors": torch.float32,
        "rpn head": torch.float32,
        "box head": torch.float32,
        "box predictor": torch.float32,
    }
    assert all(d["boxes"].dtype == d["scores"].dtype == torch.float32 for d in detections)


def test_in_float32_the_backbone_is_left_as_it_is(data: DetectionDataset) -> None:
    model = build_model(Config(**TINY), len(NAMES), (SIZE, SIZE))
    forward = model.backbone.forward
    autocast_backbone(model, FULL_PRECISION)
    assert model.backbone.forward == forward
