"""How much wall time the sweep's own Ray Tune assembly adds around trials of fixed work.

Run (from the repository root):

    .venv/bin/python benchmarks/orchestration_overhead.py                  # 40 trials x 2 s, ~1.5 min
    .venv/bin/python benchmarks/orchestration_overhead.py --quick          # 12 trials x 1 s, < 60 s
    .venv/bin/python benchmarks/orchestration_overhead.py --investigate --trials 20

Goal: on 2 slots (cpu=1 per trial, `ray.init(num_cpus=2)`), `tuner.fit()` wall time at most 1.10x
the ideal (total measured compute / slots), and at most 0.15 slot-seconds of overhead per trial.

What is measured: the Tuner that `visiontune.sweep.tuner.build_tuner` assembles for the shipped
classifier space (search_spaces/classifier.yaml: its search space, seed points, StudySearcher on
an Optuna study in SQLite, scheduler, callbacks, checkpoint retention, failure config,
reuse_actors, max_concurrent_trials = the slots `cluster_slots` counts), with Ray's trainable
`tune_edge.run_trial` as every sweep runs it. Exactly one thing differs from a real sweep: the
task that `run_trial` drives is `FixedWorkTask`, which goes through the classifier's config
validation and reports the classifier's metrics (a made-up score) with a small checkpoint every
epoch, but whose epoch is a busy loop of single-thread torch matmuls calibrated once at startup.
It is handed to `build_tuner` as its `task` (the seam benchmarks use); everything else comes
from the sweep's own code, so
a change to the sweep's Tuner settings shows up here. Overrides of the spec, all through the
spec's own validation: num_samples = --trials, fixed.epochs = --epochs, resources cpu=1 gpu=0,
and an ASHA grace period of the full budget, so that no trial is stopped early and every trial
does the same work. `--investigate` adds a row with the spec's random searcher and FIFO
scheduler, a repeat of the first row (drift in machine load over the run), and times Optuna's
storage calls outside Ray.

Compute is measured inside each trial (wall time of its busy loops), so load from other processes
on the machine slows compute and overhead alike; the load average is printed with the results.
Every trial also reports when its task's `train` started and when it sent its last report, so the
overhead splits into time inside `train` that is not compute (checkpoint writes, report round
trips) and time a slot holds no `train` call (actor start and imports, `run_trial`'s set-up,
trial hand-over, scheduling, fit() start-up and tear-down).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontune.sweep import keep_ray_on_loopback

GOAL_RATIO = 1.10
GOAL_SLOT_S_PER_TRIAL = 0.15
MATMUL_SIZE = 128
CHECKPOINT_FLOATS = 1024  # a 4 KiB tensor per checkpoint: the report path, not the disk
REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "search_spaces" / "classifier.yaml"


def _busy(iterations: int) -> float:
    """Run `iterations` single-thread matmuls; returns the seconds they took."""
    import torch

    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    out = torch.empty(MATMUL_SIZE, MATMUL_SIZE)
    start = time.perf_counter()
    for _ in range(iterations):
        torch.mm(a, b, out=out)
    return time.perf_counter() - start


def calibrate(seconds: float) -> int:
    """Matmul iterations that take about `seconds` on one thread of this machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _busy(200)  # warm-up
        rates = []
        for _ in range(3):
            rates.append(2000 / _busy(2000))
        return max(1, int(statistics.median(rates) * seconds))
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class FixedWork:
    """The fixed-work task's "dataset" (what `build_tuner` hands every trial as its data)."""

    iterations: int  # matmuls per epoch


class FixedWorkTask:
    """The trainable contract (trainables/contract.py) with a fixed busy loop for training.

    Config, METRICS, DATA_FORMAT and `build_config` are `task`'s, so a trial's config is
    validated as the real task's would be and the sweep's callbacks, searcher and scheduler get
    the metrics they expect. Every metric but `epoch` reports the same made-up score (fixed per
    configuration, rising with the epoch), plus the timing fields this benchmark reads."""

    name = "fixed_work"

    def __init__(self, task: Any) -> None:
        self._task = task
        self.Config = task.Config
        self.METRICS = task.METRICS
        self.DATA_FORMAT = task.DATA_FORMAT

    def build_config(self, values: Mapping[str, Any], where: str) -> Any:
        return self._task.build_config(values, where)

    def train(self, config: Any, data: FixedWork, context: Any) -> None:
        import torch

        started = time.time()
        first = 1
        if context.restore is not None:
            first = int(torch.load(context.restore / "ckpt.pt")["epoch"]) + 1
        quality = random.Random(repr(config.model_dump())).random()
        busy_total = 0.0
        for epoch in range(first, config.epochs + 1):
            busy = _busy(data.iterations)
            busy_total += busy
            score = quality * epoch / config.epochs
            metrics = {name: score for name in self.METRICS} | {
                "epoch": epoch,
                "busy_s": busy,
                "busy_total_s": busy_total,
                "trial_started": started,
                "trial_ended": time.time(),  # the last report's value counts: its own round
                # trip and the trial's end fall in the "between" column
                "pid": os.getpid(),
            }
            with tempfile.TemporaryDirectory(prefix="epoch-", dir=context.workdir) as directory:
                torch.save(
                    {"epoch": epoch, "w": torch.zeros(CHECKPOINT_FLOATS)},
                    Path(directory) / "ckpt.pt",
                )
                context.on_epoch(metrics, Path(directory))

    def evaluate_checkpoint(self, checkpoint_dir: Path, data: Any, split: str) -> dict[str, Any]:
        raise NotImplementedError("fixed work has no test split; the benchmark times fit() only")


@dataclass(frozen=True)
class Variant:
    label: str
    searcher: str | None = None  # None: the spec's (optuna_tpe); or "random"
    scheduler: str | None = None  # None: the spec's (asha); or "fifo"


def benchmark_spec(variant: Variant, trials: int, epochs: int) -> Any:
    """The shipped classifier spec for `trials` trials of `epochs` epochs on cpu=1 slots, where
    no trial is stopped early; validated as the CLI validates a spec."""
    from visiontune.spec import apply_overrides, read_yaml, validate

    overrides = {"num_samples": trials, "max_epochs": epochs, "cpus_per_trial": 1}
    raw = apply_overrides(read_yaml(SPEC), overrides | {"gpus_per_trial": 0}, [], str(SPEC))
    if variant.searcher:
        raw["searcher"] = {"type": variant.searcher, "seed": raw["searcher"].get("seed", 0)}
    if variant.scheduler:
        raw["scheduler"] = {"type": variant.scheduler}
    if raw["scheduler"]["type"] == "asha":
        raw["scheduler"]["grace_period"] = epochs  # every trial trains its whole budget
    return validate(raw, str(SPEC))


@dataclass(frozen=True)
class Measurement:
    variant: Variant
    assembly: str  # searcher + scheduler the Tuner got
    slots: int  # as the sweep counts them (`cluster_slots`); max_concurrent_trials
    trials: int
    wall: float
    compute: float
    in_trial: float  # sum over trials of (last report sent - train() started)
    startup: float  # slot-seconds from fit() start to each slot's first train() call
    tail: float  # slot-seconds from each slot's last report to fit() return
    actors: int

    def ideal(self) -> float:
        return self.compute / self.slots

    def ratio(self) -> float:
        return self.wall / self.ideal()

    def overhead_per_trial(self) -> float:
        return (self.wall * self.slots - self.compute) / self.trials


def run_variant(
    variant: Variant, trials: int, epochs: int, work: FixedWork, storage: Path, index: int
) -> Measurement:
    """One sweep Tuner from `build_tuner`, fitted; its trials' timings."""
    from visiontune.layout import EXPERIMENT_DIR_ENV
    from visiontune.storage import open_experiment
    from visiontune.sweep import build_tuner, cluster_slots
    from visiontune.trainables import load_task

    spec = benchmark_spec(variant, trials, epochs)
    slots = cluster_slots(spec)
    experiment = open_experiment(storage, f"variant-{index}")
    experiment.local.mkdir(parents=True)
    os.environ[EXPERIMENT_DIR_ENV] = str(experiment.local)  # as run_sweep sets it for callbacks
    tuner = build_tuner(spec, work, experiment, slots, task=FixedWorkTask(load_task(spec.task)))
    start = time.time()
    results = tuner.fit()
    end = time.time()
    if results.num_errors:
        raise RuntimeError(f"{variant.label}: {results.num_errors} trial(s) errored")
    finals = [result.metrics for result in results]
    incomplete = [m for m in finals if m.get("epoch") != epochs or "busy_total_s" not in m]
    if incomplete:
        raise RuntimeError(f"{variant.label}: {len(incomplete)} trial(s) did not do the work")
    starts = sorted(m["trial_started"] for m in finals)[:slots]
    ends = sorted(m["trial_ended"] for m in finals)[-slots:]
    return Measurement(
        variant=variant,
        assembly=f"{spec.searcher['type']} + {spec.scheduler['type']}",
        slots=slots,
        trials=len(finals),
        wall=end - start,
        compute=sum(m["busy_total_s"] for m in finals),
        in_trial=sum(m["trial_ended"] - m["trial_started"] for m in finals),
        startup=sum(t - start for t in starts),
        tail=sum(end - t for t in ends),
        actors=len({m["pid"] for m in finals}),
    )


def print_optuna_storage_costs(trials: int = 20, epochs: int = 4) -> None:
    """Driver-side milliseconds of the Optuna calls a searcher makes: ask per trial start,
    report per result (every epoch), tell per trial end, for each storage kind."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print("\noptuna storage, driver ms per call (TPE, x ~ U(0, 1)):  ask   report   tell")
    with tempfile.TemporaryDirectory(prefix="vt_optuna_") as directory:
        storages = {
            "sqlite (the sweep's)": optuna.storages.RDBStorage(f"sqlite:///{directory}/s.db"),
            "journal file": optuna.storages.JournalStorage(
                JournalFileBackend(f"{directory}/s.log")
            ),
            "in-memory": None,
        }
        for label, storage in storages.items():
            study = optuna.create_study(
                storage=storage, sampler=optuna.samplers.TPESampler(seed=0), direction="maximize"
            )
            seconds = {"ask": 0.0, "report": 0.0, "tell": 0.0}
            for _ in range(trials):
                start = time.perf_counter()
                trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
                seconds["ask"] += time.perf_counter() - start
                for epoch in range(1, epochs + 1):
                    start = time.perf_counter()
                    trial.report(trial.params["x"] + epoch, epoch)
                    seconds["report"] += time.perf_counter() - start
                start = time.perf_counter()
                study.tell(trial, trial.params["x"] + epochs)
                seconds["tell"] += time.perf_counter() - start
            ms = {
                k: 1000 * v / (trials * (epochs if k == "report" else 1))
                for k, v in seconds.items()
            }
            print(f"  {label:<48}{ms['ask']:>6.1f}{ms['report']:>9.1f}{ms['tell']:>7.1f}")


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (Tune's progress tables, worker logs) to `path`, so the
    benchmark's own output stays readable; Tune still formats and writes everything it would.
    The file lives in the temporary storage and is deleted with it."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = False
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if failed:  # the log is about to be deleted with its directory: show its end
                tail = path.read_text(errors="replace").splitlines()[-40:]
                print("\n".join(["--- end of the captured console output ---", *tail]))


def variants(investigate: bool) -> list[Variant]:
    chosen = [Variant("sweep as shipped")]
    if investigate:
        chosen += [
            Variant("sweep, random + FIFO", searcher="random", scheduler="fifo"),
            Variant("sweep as shipped (again)"),  # shows drift in machine load over the run
        ]
    return chosen


def print_table(measurements: list[Measurement]) -> None:
    header = (
        f"{'variant':<26}{'assembly':<22}{'trials':>7}{'actors':>7}{'wall s':>9}{'ideal s':>9}"
        f"{'ratio':>7}{'ovh slot-s/trial':>18}{'in-trial':>10}{'startup':>9}{'between':>9}"
        f"{'tail':>7}{'recurring':>11}  goals"
    )
    print(header)
    print("-" * len(header))
    for m in measurements:
        ratio, per_trial = m.ratio(), m.overhead_per_trial()
        in_trial = (m.in_trial - m.compute) / m.trials  # report/checkpoint waits inside train
        idle = m.wall * m.slots - m.in_trial  # slot-seconds with no train() running
        between = (idle - m.startup - m.tail) / m.trials
        goals = "MET" if ratio <= GOAL_RATIO and per_trial <= GOAL_SLOT_S_PER_TRIAL else "missed"
        print(
            f"{m.variant.label:<26}{m.assembly:<22}{m.trials:>7}{m.actors:>7}{m.wall:>9.2f}"
            f"{m.ideal():>9.2f}{ratio:>7.3f}{per_trial:>18.3f}{in_trial:>10.3f}"
            f"{m.startup / m.trials:>9.3f}{between:>9.3f}{m.tail / m.trials:>7.3f}"
            f"{in_trial + between:>11.3f}  {goals}"
        )
    print(
        "\ncolumns: ratio = wall / ideal, ideal = total measured compute / slots; "
        "ovh = (wall*slots - compute) / trials, the sum of (all per trial):\n"
        "  in-trial: time in the task's train() that is not compute, up to the last report\n"
        "            (checkpoint writes + report round trips of epochs 1..N-1)\n"
        "  startup:  fit() start to the first train() on each slot (actor start, imports,\n"
        "            run_trial's set-up)\n"
        "  between:  last report sent to the next train() start (last round trip, trial end,\n"
        "            actor reset, run_trial's set-up, searcher and scheduling)\n"
        "  tail:     last report on each slot to fit() return\n"
        "  recurring = in-trial + between: the part that does not shrink with more trials per slot\n"
        f"Goals: ratio <= {GOAL_RATIO}, ovh <= {GOAL_SLOT_S_PER_TRIAL}."
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 trials of ~1 s (< 60 s)")
    parser.add_argument("--trials", type=int, default=None, help="default 40 (12 with --quick)")
    parser.add_argument("--slots", type=int, default=2, help="ray.init(num_cpus=slots)")
    parser.add_argument("--epochs", type=int, default=4, help="reports per trial")
    parser.add_argument("--epoch-s", type=float, default=None, help="default 0.5 (0.25 quick)")
    parser.add_argument("--investigate", action="store_true", help="more rows, Optuna costs")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    trials = args.trials or (12 if args.quick else 40)
    epoch_s = args.epoch_s or (0.25 if args.quick else 0.5)
    keep_ray_on_loopback()
    import ray
    import torch

    iterations = calibrate(epoch_s)
    print(
        f"python {sys.version.split()[0]}, ray {ray.__version__}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{trials} trials x {args.epochs} epochs x {iterations} matmuls {MATMUL_SIZE}x{MATMUL_SIZE}"
        f" (calibrated to ~{epoch_s} s per epoch on 1 thread), {args.slots} slots of cpu=1;\n"
        f"Tuner from visiontune.sweep.tuner.build_tuner for {SPEC.relative_to(REPO)} "
        "(ASHA grace period = all epochs), trials run FixedWorkTask through run_trial"
    )
    measurements = []
    # Ray's, Tune's and the workers' console output goes to a file (some of it arrives late)
    with (
        tempfile.TemporaryDirectory(prefix="vt_orch_") as storage,
        console_to(Path(storage) / "ray_console.log"),
    ):
        ray.init(address="local", include_dashboard=False, num_cpus=args.slots)
        try:
            for index, variant in enumerate(variants(args.investigate)):
                measurements.append(
                    run_variant(
                        variant, trials, args.epochs, FixedWork(iterations), Path(storage), index
                    )
                )
        finally:
            ray.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print_table(measurements)
    if args.investigate:
        print_optuna_storage_costs()


if __name__ == "__main__":
    main()
