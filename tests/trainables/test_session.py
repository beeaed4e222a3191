"""Tests for what every Session shares (trainables/session.py): precision, device copies and
the checkpoint, on a tiny real session (a linear model) on the CPU; GPU cases skip without one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visiontune.params import StrictModel
from visiontune.trainables.session import (
    FULL_PRECISION,
    CheckpointedSession,
    Precision,
    read_checkpoint,
    saved_cuda_rng,
    to_device,
    upload,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class TinyConfig(StrictModel):
    epochs: int = 3
    seed: int = 0
    amp: bool = True


class TinySession(CheckpointedSession):
    """A linear regression with dropout and shuffled batches: every kind of state a session has."""

    def __init__(self, config: TinyConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 1)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.5)
        self.precision = Precision.choose(self.device, config.amp)
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
        self.x, self.y = to_device(x, self.device), to_device(x.sum(1, keepdim=True), self.device)
        self.epoch = 0

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        total = 0.0
        for idx in torch.randperm(len(self.x), generator=self.generator).split(8):
            with self.precision.autocast():
                loss = F.mse_loss(self.model(self.x[idx]), self.y[idx])
            self.precision.backward_and_step(loss, self.optimizer)
            total += loss.item()
        self.scheduler.step()
        self.epoch += 1
        return {"loss": total, "epoch": self.epoch}


def _enable_scaler(session: TinySession, init_scale: float) -> None:
    """An enabled GradScaler, as float16 training on a GPU has; CPU GradScalers exist too."""
    session.precision = Precision(None, torch.amp.GradScaler("cpu", init_scale=init_scale))


def _parameters(session: TinySession) -> list[torch.Tensor]:
    return [p.detach().clone() for p in session.model.parameters()]


# --- precision -----------------------------------------------------------------------------


def test_on_the_cpu_amp_means_float32_without_autocast_or_loss_scaling() -> None:
    precision = Precision.choose(torch.device("cpu"), amp=True)
    assert precision.dtype is None and not precision.scaler.is_enabled()
    with precision.autocast():
        assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_full_precision_step_is_the_plain_backward_and_step() -> None:
    def train(step_with_precision: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
        for _ in range(3):
            loss = model(x).pow(2).mean()
            if step_with_precision:
                FULL_PRECISION.backward_and_step(loss, optimizer)
            else:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(train(True), train(False), strict=True):
        assert torch.equal(a, b)


@cuda
def test_on_a_gpu_amp_picks_native_bfloat16_else_float16_with_a_scaler() -> None:
    device = torch.device("cuda")
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    precision = Precision.choose(device, amp=True)
    assert precision.dtype == (torch.bfloat16 if native else torch.float16)
    assert precision.scaler.is_enabled() == (not native)
    detector = Precision.choose(device, amp=True, allow_bf16=False)
    assert detector.dtype == torch.float16 and detector.scaler.is_enabled()
    off = Precision.choose(device, amp=False)
    assert off.dtype is None and not off.scaler.is_enabled()
    with precision.autocast():
        out = torch.ones(8, 8, device=device) @ torch.ones(8, 8, device=device)
    assert out.dtype == precision.dtype


# --- device copies -------------------------------------------------------------------------


def test_to_device_on_the_cpu_is_the_tensor_itself() -> None:
    tensor = torch.arange(6)
    assert to_device(tensor, torch.device("cpu")) is tensor


@cuda
def test_to_device_on_a_gpu_copies_the_values_from_pinned_memory() -> None:
    tensor = torch.arange(1000, dtype=torch.uint8).reshape(10, 100)
    moved = to_device(tensor, torch.device("cuda"))
    assert moved.is_cuda and torch.equal(moved.cpu(), tensor)
    assert not tensor.is_pinned()  # the caller's tensor is left as it was
    assert to_device(moved, torch.device("cuda")) is moved  # already there: no pinning


# --- checkpoint ----------------------------------------------------------------------------


def test_checkpoint_round_trips_the_gradient_scaler_state(tmp_path) -> None:
    session = TinySession(TinyConfig())
    _enable_scaler(session, init_scale=2.0**10)
    session.train_epoch()  # the scaler's growth tracker counts these steps
    saved = session.precision.scaler.state_dict()
    assert saved["_growth_tracker"] == 4
    session.save(tmp_path / "state.pt")

    resumed = TinySession(TinyConfig())
    _enable_scaler(resumed, init_scale=2.0**16)
    resumed.load(tmp_path / "state.pt")
    assert resumed.precision.scaler.state_dict() == saved


def test_an_empty_scaler_state_leaves_an_enabled_scaler_as_it_was(tmp_path) -> None:
    TinySession(TinyConfig()).save(tmp_path / "float32.pt")  # a CPU run: scaler state {}
    session = TinySession(TinyConfig())
    _enable_scaler(session, init_scale=512.0)
    session.load(tmp_path / "float32.pt")  # an enabled GradScaler would refuse {} itself
    assert session.precision.scaler.get_scale() == 512.0


def _optimizer_tensors(session: TinySession, key: str) -> list[torch.Tensor]:
    return [state[key] for state in session.optimizer.state.values()]


def test_a_checkpoint_loads_through_host_memory_and_adams_step_stays_on_the_cpu(tmp_path) -> None:
    session = TinySession(TinyConfig())
    session.train_epoch()
    session.save(tmp_path / "state.pt")
    state = read_checkpoint(tmp_path / "state.pt")
    tensors = [state["model"][k] for k in state["model"]] + [state["rng"]["torch"]]
    assert all(t.device.type == "cpu" for t in tensors)
    resumed = TinySession(TinyConfig())
    resumed.load(tmp_path / "state.pt")
    steps = _optimizer_tensors(resumed, "step")
    assert steps and all(step.device.type == "cpu" and int(step) == 4 for step in steps)
    assert all(m.device == resumed.device for m in _optimizer_tensors(resumed, "exp_avg"))


@cuda
def test_on_a_gpu_a_checkpoint_loads_with_adams_step_on_the_cpu_and_its_moments_on_the_gpu(
    tmp_path,
) -> None:
    session = TinySession(TinyConfig(), "cuda")
    session.train_epoch()
    session.save(tmp_path / "state.pt")
    resumed = TinySession(TinyConfig(), "cuda")
    resumed.load(tmp_path / "state.pt")
    assert all(step.device.type == "cpu" for step in _optimizer_tensors(resumed, "step"))
    assert all(m.is_cuda for m in _optimizer_tensors(resumed, "exp_avg"))
    resumed.train_epoch()  # Adam steps with that state


def test_the_checkpoint_holds_at_most_the_cuda_rng_of_its_own_device(tmp_path) -> None:
    assert TinySession(TinyConfig()).state_dict()["rng"]["cuda"] == []  # CPU: CUDA untouched
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(3)]
    # a checkpoint written before: one state per GPU its process saw; the first is its own
    assert torch.equal(saved_cuda_rng({"cuda": states}), states[0])
    assert torch.equal(saved_cuda_rng({"cuda": states[:1]}), states[0])
    assert saved_cuda_rng({"cuda": []}) is None and saved_cuda_rng({}) is None


def test_a_cpu_session_ignores_the_cuda_rng_states_of_a_gpu_checkpoint(tmp_path) -> None:
    session = TinySession(TinyConfig())
    state = session.state_dict()
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 4  # 4 GPUs saw it
    torch.save(state, tmp_path / "state.pt")
    resumed = TinySession(TinyConfig())
    resumed.load(tmp_path / "state.pt")
    assert resumed.epoch == session.epoch


@cuda
def test_on_a_gpu_the_checkpoint_restores_its_own_devices_rng_from_an_older_list(tmp_path) -> None:
    session = TinySession(TinyConfig(), "cuda")
    (own,) = session.state_dict()["rng"]["cuda"]
    assert torch.equal(own, torch.cuda.get_rng_state())
    state = session.state_dict()
    state["rng"]["cuda"] = [own] + [torch.cuda.get_rng_state()] * 7  # saved where 8 were visible
    torch.save(state, tmp_path / "state.pt")
    torch.cuda.manual_seed(123)
    TinySession(TinyConfig(), "cuda").load(tmp_path / "state.pt")  # no IndexError
    assert torch.equal(torch.cuda.get_rng_state(), own)


def test_a_whole_split_is_uploaded_without_pinning() -> None:
    tensor = torch.arange(12, dtype=torch.uint8)
    assert torch.equal(upload(tensor, torch.device("cpu")), tensor)


@cuda
def test_on_a_gpu_uploading_a_split_leaves_no_pinned_host_memory_behind() -> None:
    before = torch.cuda.host_memory_stats().get("allocated_bytes.current", 0)
    uploaded = upload(torch.zeros(8 << 20, dtype=torch.uint8), torch.device("cuda"))
    assert uploaded.is_cuda
    assert torch.cuda.host_memory_stats().get("allocated_bytes.current", 0) - before < 8 << 20
