"""Tests for the Ray edge of the trainables (trainables/tune_edge.py, trainables/device.py): which
device and how many threads a trial gets, that a trial Ray gave a GPU torch cannot use ends at once
with one line saying why (never on the CPU, never retried), that a trial's session is freed when
the trial ends,
however it ends, and that `run_trial` drives every task through a real local Ray Tune. The memory
tests run with Python's automatic garbage collection off, so that only the collection under test
can free a reference cycle."""

from __future__ import annotations

import gc
import json
import math
import os
import socket
import sys
import traceback
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from visiontune.sweep.ledger import reconcile_ledger
from visiontune.trainables import TASKS, load_task
from visiontune.trainables import device as device_module
from visiontune.trainables.contract import diverged_reason
from visiontune.trainables.cuda_versions import MIN_DRIVER
from visiontune.trainables.device import (
    ALLOW_FAKE_GPUS,
    GPUUnavailableError,
    arch_supported,
    cuda_index,
    device_label,
    local_device,
    nvidia_driver_version,
    pick_device,
    releasing_memory,
    ultralytics_device,
)
from visiontune.trainables.session import CheckpointedSession, Precision, SessionTask, to_device
from visiontune.trainables.tune_edge import run_trial

# --- a tiny real session -------------------------------------------------------------------


class ProbeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = 2
    fail_at: int = 0  # the epoch whose training raises FloatingPointError; 0 = none
    seed: int = 0
    amp: bool = True


class ProbeSession(CheckpointedSession):
    """A linear model on random data that can diverge on demand. Its model refers back to the
    session: a reference cycle, which only a garbage collection frees (real sessions may hold
    one through a hook or a closure; this one always does)."""

    def __init__(self, config: ProbeConfig, data: Any = None, device: str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = nn.Linear(8, 1).to(self.device)
        self.model.session = self  # the cycle
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=10)
        self.precision = Precision.choose(self.device, config.amp)
        self.x = to_device(torch.randn(64, 8, generator=self.generator), self.device)
        self.epoch = 0

    def train_epoch(self) -> dict[str, float]:
        if self.epoch + 1 == self.config.fail_at:
            raise FloatingPointError("loss became nan (diverged on purpose)")
        with self.precision.autocast():
            loss = F.mse_loss(self.model(self.x), self.x.sum(1, keepdim=True))
        self.precision.backward_and_step(loss, self.optimizer)
        self.scheduler.step()
        self.epoch += 1
        return {"loss": loss.item(), "epoch": self.epoch}

    def evaluate(self, split: str) -> dict[str, float]:
        return {}


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _train(session: ProbeSession) -> None:
    """Hold the session in a callee's frame only, as run_session does."""
    while session.epoch < session.config.epochs:
        session.train_epoch()


def _stop(session: ProbeSession) -> None:
    session.train_epoch()
    sys.exit(0)  # what tune.report does in a trial that Tune stopped


# --- device --------------------------------------------------------------------------------


def test_a_gpu_is_used_only_when_ray_assigned_one() -> None:
    assert pick_device([], cuda_available=True) == "cpu"  # gpu=0 trial on a GPU node
    assert pick_device([], cuda_available=False) == "cpu"
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU: CUDA calls it device 0
    assert pick_device([0], cuda_available=True, visible="0") == "cuda"
    assert pick_device(["1"], cuda_available=True, visible="1") == "cuda"


def test_with_every_gpu_visible_the_assigned_id_is_the_cuda_index() -> None:
    # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1: Ray leaves CUDA_VISIBLE_DEVICES unset
    assert pick_device(["1"], cuda_available=True, visible=None) == "cuda:1"
    assert pick_device(["0"], cuda_available=True, visible=None) == "cuda"
    # ... or as the node was started: the id's place in that list
    assert pick_device(["3"], cuda_available=True, visible="2,3") == "cuda:1"
    assert cuda_index(["GPU-8f2a"], "GPU-1c3d,GPU-8f2a") == 1


@pytest.fixture
def no_fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_FAKE_GPUS, raising=False)


def test_an_assigned_gpu_torch_cannot_use_is_one_line_naming_cuda_driver_and_node(
    no_fake_gpus: None,
) -> None:
    driver = "NVIDIA driver 460.32.03 (from /proc/driver/nvidia/version)"
    with pytest.raises(GPUUnavailableError) as raised:
        pick_device([0], cuda_available=False, node="ip-10-0-1-5 (10.0.1.5)", problem=driver)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("Ray assigned GPU 0 to this process on node ip-10-0-1-5 (10.0.1.5)")
    assert driver in message and ALLOW_FAKE_GPUS in message
    if torch.version.cuda is None:
        assert f"torch {torch.__version__} is a CPU-only build" in message
    else:
        wanted = MIN_DRIVER[torch.version.cuda]
        assert f"(CUDA {torch.version.cuda}, needs NVIDIA driver >= {wanted})" in message


def test_without_a_named_problem_the_message_names_the_driver_found_here(
    no_fake_gpus: None,
) -> None:
    with pytest.raises(GPUUnavailableError) as raised:
        pick_device(["2"], cuda_available=False)
    message = str(raised.value)
    assert f"on node {socket.gethostname()}" in message
    found = nvidia_driver_version()
    assert (f"NVIDIA driver {found[0]}" if found else "no NVIDIA driver visible") in message


def test_a_test_cluster_with_declared_gpus_may_train_on_the_cpu_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ALLOW_FAKE_GPUS, "1")
    with pytest.warns(RuntimeWarning, match=rf"Ray assigned GPU 0 .*{ALLOW_FAKE_GPUS}=1"):
        assert pick_device([0], cuda_available=False, node="fake") == "cpu"
    assert device_label("cpu", [0]) == f"cpu (Ray GPU 0 unusable, {ALLOW_FAKE_GPUS}=1)"
    assert device_label("cpu") == "cpu"


def test_the_driver_version_is_read_from_the_kernel_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_file = tmp_path / "version"
    version_file.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
        "(dvs-builder@U16-I3-D08-1-2)  Sun Jul 27 06:54:38 UTC 2025\n"
        "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n"
    )
    monkeypatch.setattr(device_module, "DRIVER_FILE", version_file)
    assert nvidia_driver_version() == ("580.65.06", str(version_file))
    monkeypatch.setattr(device_module, "DRIVER_FILE", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi either
    assert nvidia_driver_version() is None


def test_a_gpu_older_than_the_builds_oldest_architecture_is_not_usable() -> None:
    cu130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.1+cu130
    assert not arch_supported((7, 0), cu130)  # V100
    assert arch_supported((7, 5), cu130)  # T4
    assert arch_supported((8, 9), cu130)  # L4: sm_86 machine code runs on 8.9
    assert arch_supported((12, 0), cu130)
    assert arch_supported((9, 0), ["sm_80", "compute_80"])  # PTX compiles for newer GPUs
    assert not arch_supported((9, 0), ["sm_80"])
    assert arch_supported((9, 0), ["sm_90a"])


def test_ultralytics_names_the_cuda_device_by_its_index() -> None:
    assert ultralytics_device("cpu") == "cpu"
    assert ultralytics_device("cuda") == "0"
    assert ultralytics_device("cuda:2") == "2"


def test_outside_ray_the_local_device_is_whatever_torch_sees() -> None:
    assert local_device() == ("cuda" if torch.cuda.is_available() else "cpu")


# --- memory --------------------------------------------------------------------------------


def test_a_session_in_a_cycle_outlives_its_last_reference_without_a_collection(
    no_automatic_gc: None,
) -> None:
    # the premise of the tests below: without a collection, the probe's memory stays taken
    session = ProbeSession(ProbeConfig())
    model = weakref.ref(session.model)
    del session
    assert model() is not None
    gc.collect()
    assert model() is None


def test_releasing_memory_frees_a_session_that_trained_to_the_end(no_automatic_gc: None) -> None:
    made: list[weakref.ref] = []

    def make() -> ProbeSession:
        session = ProbeSession(ProbeConfig())
        made.append(weakref.ref(session.model))
        return session

    with releasing_memory("cpu"):
        _train(make())
    assert made and made[0]() is None


@pytest.mark.parametrize(
    ("run", "error"),
    [(_train, FloatingPointError), (_stop, SystemExit)],
    ids=["diverged", "stopped-by-tune"],
)
def test_releasing_memory_frees_a_session_whose_training_raised(
    no_automatic_gc: None, run: Any, error: type[BaseException]
) -> None:
    session_config = ProbeConfig(fail_at=2)
    made: list[weakref.ref] = []

    def make() -> ProbeSession:
        session = ProbeSession(session_config)
        made.append(weakref.ref(session.model))
        return session

    with pytest.raises(error) as raised, releasing_memory("cpu"):
        run(make())
    # the error is still alive here (pytest keeps it), yet no longer holds the model ...
    assert made[0]() is None
    # ... and its traceback still names every function it passed through
    assert f"in {run.__name__}" in "".join(traceback.format_exception(raised.value))


# --- through Ray Tune ----------------------------------------------------------------------

CASES = [  # trials run one at a time; Ray's node has 2 CPUs and 1 GPU slot
    {"name": "half-cpu", "resources": {"cpu": 0.5, "gpu": 0}, "session": {}},
    {"name": "half-cpu-diverges", "resources": {"cpu": 0.5, "gpu": 0}, "session": {"fail_at": 2}},
    {"name": "two-cpus", "resources": {"cpu": 2, "gpu": 0}, "session": {}},
    # on a CPU machine the GPU slot is declared only: allowed as a test cluster's, or not
    {
        "name": "gpu",
        "resources": {"cpu": 1, "gpu": 1},
        "session": {},
        "env": {ALLOW_FAKE_GPUS: "1"},
    },
    {"name": "gpu-unusable", "resources": {"cpu": 1, "gpu": 1}, "session": {}},
]


class RecordingProbeSession(ProbeSession):
    """A ProbeSession that writes down in its `data` (a dict the trial passes through
    run_trial), as it is built, the device, threads and GPU ids of its trial, and a weak
    reference to its model."""

    def __init__(self, config: ProbeConfig, data: dict[str, Any], device: str = "cpu") -> None:
        import ray

        super().__init__(config, data, device)
        data.update(
            device=device,
            threads=torch.get_num_threads(),
            gpu_ids=[str(i) for i in ray.get_gpu_ids()],
            model=weakref.ref(self.model),
        )


PROBE_TASK = SessionTask(
    name="probe",
    Config=ProbeConfig,
    METRICS=("loss", "epoch"),
    DATA_FORMAT="imagefolder",
    session_class=RecordingProbeSession,
    summarize=lambda result, split: result,
)


def _probe_trial(config: dict[str, Any]) -> None:
    """A trial that trains a probe session through run_trial and writes down what it saw: its
    device, threads and GPU ids, how run_trial ended, and whether the model was freed."""
    case = config["case"]
    seen: dict[str, Any] = {}
    env = case.get("env", {})
    os.environ.update(env)  # read when run_trial picks the device; the worker is reused after
    gc.collect()
    gc.disable()  # only run_trial's own collection may free the session's cycle
    outcome = "finished"
    try:
        run_trial(case["session"], PROBE_TASK, seen)
    except BaseException as error:
        outcome = f"raised {type(error).__name__}"
        raise
    finally:
        model = seen.pop("model", None)  # None: no session was built
        record = {**seen, "outcome": outcome, "model_freed": model is None or model() is None}
        gc.enable()
        for name in env:
            os.environ.pop(name, None)
        with Path(config["out"], f"{case['name']}.jsonl").open("a") as attempts:
            attempts.write(json.dumps(record) + "\n")


@pytest.fixture(scope="module")
def ray_node() -> Iterator[None]:
    import ray

    # the probe lives in this test module, which Ray's workers cannot import by name
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # one GPU slot on this node, real or (on a CPU machine) declared for scheduling only
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def probed(ray_node: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from ray import tune

    out = tmp_path_factory.mktemp("probes")
    tuner = tune.Tuner(
        tune.with_resources(_probe_trial, lambda config: config["case"]["resources"]),
        param_space={"case": tune.grid_search(CASES), "out": str(out)},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(
            storage_path=str(out / "ray"),
            name="probe",
            failure_config=tune.FailureConfig(max_failures=2),  # a raised trial would run again
        ),
    )
    results = tuner.fit()
    assert results.errors == []
    records = {}
    for result in results:
        name = result.config["case"]["name"]
        attempts = (out / f"{name}.jsonl").read_text().splitlines()
        record = json.loads(attempts[-1])
        rows = result.metrics_dataframe
        records[name] = {
            **record,
            "attempts": len(attempts),
            "reports": rows.to_dict("records"),
            "last": result.metrics,
        }
    return records


@pytest.mark.ray  # a local Ray node (ray_node)
def test_trial_threads_are_its_cpu_share_rounded_down_to_at_least_one(probed) -> None:
    assert probed["half-cpu"]["threads"] == 1
    assert probed["two-cpus"]["threads"] == 2
    assert probed["gpu"]["threads"] == 1


@pytest.mark.ray  # a local Ray node (ray_node)
def test_a_trial_without_a_gpu_trains_on_the_cpu_on_a_node_with_one(probed) -> None:
    for name in ("half-cpu", "half-cpu-diverges", "two-cpus"):
        assert probed[name]["gpu_ids"] == [] and probed[name]["device"] == "cpu", name
    assert len(probed["gpu"]["gpu_ids"]) == 1  # whichever GPU Ray picked (not always "0")
    # Ray set CUDA_VISIBLE_DEVICES to it: CUDA's device 0; a declared-only slot (no CUDA here)
    # trains on the CPU only because the case allows fake GPUs
    assert probed["gpu"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.ray  # a local Ray node (ray_node)
def test_every_epoch_reports_the_device_it_trained_on(probed) -> None:
    for name in ("half-cpu", "two-cpus"):
        assert {row["device"] for row in probed[name]["reports"]} == {"cpu"}, name
    gpu = {row["device"] for row in probed["gpu"]["reports"]}
    if torch.cuda.is_available():
        assert gpu == {torch.cuda.get_device_name(0)}
    else:
        (label,) = gpu
        assert label.startswith("cpu (Ray GPU ") and ALLOW_FAKE_GPUS in label


@pytest.mark.ray  # a local Ray node (ray_node)
def test_a_trial_on_a_gpu_torch_cannot_use_ends_once_as_an_error_naming_cuda_driver_and_node(
    probed,
) -> None:
    if torch.cuda.is_available():
        pytest.skip("the GPU slot is real here: the trial uses it")
    unusable = probed["gpu-unusable"]
    assert unusable["attempts"] == 1 and unusable["outcome"] == "finished"  # not retried
    assert "device" not in unusable  # no session was built: nothing trained on the CPU
    (report,) = unusable["reports"]
    reason = diverged_reason(report)
    assert reason is not None and "\n" not in reason
    assert reason.startswith(f"GPUUnavailableError: Ray assigned GPU {unusable_gpu(probed)} ")
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    assert build in reason and f"on node {socket.gethostname()} (" in reason
    assert "NVIDIA driver" in reason  # the one found, or "no NVIDIA driver visible"
    assert math.isnan(report["loss"])
    # the sweep's records read it as the trial's ERROR with that reason
    trial = SimpleNamespace(metrics=unusable["last"], path="/exp/trial_t", error=None)
    ledger = {"t": {"dir": "trial_t", "status": "RUNNING", "epochs": 0}}
    entry = reconcile_ledger(ledger, {"t": trial}, epochs=2)["t"]
    assert entry["status"] == "ERROR" and entry["error"] == reason


def unusable_gpu(probed: dict[str, dict]) -> str:
    """The GPU id Ray gave the trials with a GPU slot (one slot: the same for both)."""
    return probed["gpu"]["gpu_ids"][0]


@pytest.mark.ray  # a local Ray node (ray_node)
def test_run_trial_frees_the_session_when_the_trial_ends(probed) -> None:
    # a diverged trial returns (see the next test): Ray would retry a raised error
    assert {name: record["outcome"] for name, record in probed.items()} == dict.fromkeys(
        probed, "finished"
    )
    assert {name: record["attempts"] for name, record in probed.items()} == dict.fromkeys(probed, 1)
    assert {name: record["model_freed"] for name, record in probed.items()} == dict.fromkeys(
        probed, True
    )


@pytest.mark.ray  # a local Ray node (ray_node)
def test_a_diverged_trial_reports_why_once_and_ends_without_an_error(probed) -> None:
    """Ray retries a trial that raises (FailureConfig) as if its worker had died; a NaN loss is
    final, so run_trial reports it as the trial's last result and returns."""
    first, diverged = probed["half-cpu-diverges"]["reports"]  # epoch 2 diverged
    assert first["epoch"] == 1 and diverged_reason(first) is None
    reason = "FloatingPointError: loss became nan (diverged on purpose)"
    assert diverged_reason(diverged) == reason and diverged["training_iteration"] == 2
    last = probed["half-cpu-diverges"]["last"]
    assert diverged_reason(last) == reason and math.isnan(last["loss"]) and "epoch" not in last
    ended_early = ("half-cpu-diverges", "gpu-unusable")
    assert all(
        diverged_reason(r["last"]) is None for n, r in probed.items() if n not in ended_early
    )


def _local_device_in_a_task(allow_fake_gpus: bool = False) -> dict[str, Any]:
    import ray

    if allow_fake_gpus:
        os.environ[ALLOW_FAKE_GPUS] = "1"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            device = local_device()
    except GPUUnavailableError as error:
        device = f"error: {error}"
    finally:
        os.environ.pop(ALLOW_FAKE_GPUS, None)  # the worker runs the next task too
    return {
        "device": device,
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
        "warnings": [str(w.message) for w in caught],
        "pid": os.getpid(),
    }


@pytest.mark.ray  # a local Ray node (ray_node)
def test_in_a_ray_task_the_local_device_follows_the_tasks_gpus(ray_node: None) -> None:
    import ray

    task = ray.remote(_local_device_in_a_task)
    without, with_gpu, allowed = ray.get(
        [
            task.options(num_gpus=0).remote(),
            task.options(num_gpus=1).remote(),
            task.options(num_gpus=1).remote(allow_fake_gpus=True),
        ]
    )
    assert without["gpu_ids"] == [] and without["device"] == "cpu"
    assert len(with_gpu["gpu_ids"]) == 1
    if torch.cuda.is_available():
        assert with_gpu["device"] == allowed["device"] == "cuda"
        return
    # only Ray's assignment, not torch, could have produced these
    gpu = with_gpu["gpu_ids"][0]
    assert with_gpu["device"].startswith(f"error: Ray assigned GPU {gpu} to this process")
    assert allowed["device"] == "cpu"
    assert any(f"{ALLOW_FAKE_GPUS}=1: using the CPU" in message for message in allowed["warnings"])


# --- every task through run_trial in Ray Tune ----------------------------------------------

TINY_TRIALS = {  # two epochs of each task, small enough for a CPU
    "classifier": {"width": 4, "batch_size": 8, "epochs": 2},
    "faster_rcnn": {
        "box_batch_size_per_image": 32,
        "rpn_post_nms_top_n_test": 50,
        "batch_size": 4,
        "epochs": 2,
    },
    "yolo": {"imgsz": 64, "batch": 8, "close_mosaic": 0, "epochs": 2},
}


@pytest.mark.ray
@pytest.mark.parametrize("task_name", sorted(TINY_TRIALS))
def test_run_trial_reports_every_metric_and_a_checkpoint_each_epoch_in_ray_tune(
    ray_node: None, task_name: str, tmp_path: Path
) -> None:
    from ray import tune
    from tiny_data import classification_dataset, write_detection_dataset

    task = load_task(task_name)
    data = (
        classification_dataset()
        if task.DATA_FORMAT == "imagefolder"
        else write_detection_dataset(tmp_path / "data")
    )
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, task=task_name, data=data), {"cpu": 1}),
        param_space=TINY_TRIALS[task_name],
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name=task_name),
    )
    results = tuner.fit()
    assert results.errors == []
    history = results[0].metrics_dataframe
    # one report per epoch (ultralytics' own Ray callback, were it on, would add rows)
    assert list(history["training_iteration"]) == [1, 2]
    assert list(history["epoch"]) == [1, 2]
    assert set(task.METRICS) <= set(history.columns)
    assert not history[list(task.METRICS)].isna().any().any()
    kept = sorted(results[0].best_checkpoints, key=lambda item: item[1]["training_iteration"])
    assert [metrics["epoch"] for _, metrics in kept] == [1, 2]
    for checkpoint, _ in kept:  # each is a checkpoint the task itself can evaluate
        with checkpoint.as_directory() as directory:
            evaluated = task.evaluate_checkpoint(Path(directory), data, "val")
        assert any(key.startswith("val_") for key in evaluated)


def test_every_task_has_a_tiny_trial_here() -> None:
    assert set(TINY_TRIALS) == set(TASKS)
