"""How much wall time Ray Tune adds around fixed-work trials, with the sweep's Tuner settings.

Run (from the repository root):

    .venv/bin/python benchmarks/orchestration_overhead.py                  # 40 trials x 2 s, ~1 min
    .venv/bin/python benchmarks/orchestration_overhead.py --quick          # 12 trials x 1 s, < 30 s
    .venv/bin/python benchmarks/orchestration_overhead.py --compare-reuse  # + reuse_actors=False
    .venv/bin/python benchmarks/orchestration_overhead.py --investigate --prewarm --trials 20

`--investigate` adds a row per setting (about 9 minutes at 20 trials) and times Optuna's storage
calls; `--prewarm` adds a prototype that warms pool workers before fit() (it did not help here).

Goal: on 2 slots (cpu=1 per trial, `ray.init(num_cpus=2)`), `tuner.fit()` wall time at most 1.10x
the ideal (total measured compute / slots), and at most 0.15 slot-seconds of overhead per trial.

Each trial runs a busy loop of single-thread torch matmuls, calibrated once at startup, for EPOCHS
"epochs" and calls `tune.report` after each with a small checkpoint, as `trainables/classifier.py`
does. The Tuner matches `visiontune/sweep.py`: function trainable wrapped in `with_resources`,
`reuse_actors=True`, `max_concurrent_trials=slots`, `CheckpointConfig(num_to_keep=1, score)`,
storage in a temp dir. The "sweep settings" row keeps Tune's default search (random), FIFO and
Ray's default loggers (the bare Tuner cost); `--investigate` adds rows with the sweep's own
callbacks (CSV, JSON, visiontune TensorBoard + status ledger) and with Optuna TPE on a SQLite study
+ ASHA, besides rows that switch single settings off.

Compute is measured inside each trial (wall time of its busy loops), so load from other processes
on the machine slows compute and overhead alike; the load average is printed with the results.
Every trial also reports when it started and ended, so the overhead splits into time inside the
trial function that is not compute (report/checkpoint round trips) and time a slot holds no trial
(actor start, reset, scheduling, fit() start-up and tear-down).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontune.sweep import keep_ray_on_loopback

GOAL_RATIO = 1.10
GOAL_SLOT_S_PER_TRIAL = 0.15
MATMUL_SIZE = 128


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


def fixed_work_trainable(config: dict[str, Any]) -> None:
    """A trial: `epochs` busy loops, each followed by a report with a small checkpoint."""
    entered = time.time()
    import torch  # paid once per worker process (reused actors keep it imported)
    from ray import tune

    torch.set_num_threads(1)
    started = time.time()
    busy_total = 0.0
    for epoch in range(1, config["epochs"] + 1):
        busy = _busy(config["iterations"])
        busy_total += busy
        metrics = {
            "epoch": epoch,
            "score": config["x"] + epoch,
            "busy_s": busy,
            "busy_total_s": busy_total,
            "trial_entered": entered,
            "trial_started": started,
            "trial_ended": time.time(),  # the last report's value counts: its own round trip
            # and the trial's end fall in the "between" column
            "pid": os.getpid(),
        }
        if config["checkpoint"]:
            with tempfile.TemporaryDirectory() as directory:
                torch.save({"epoch": epoch, "w": torch.zeros(1024)}, Path(directory) / "ckpt.pt")
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(metrics)


@dataclass(frozen=True)
class Variant:
    label: str
    reuse_actors: bool = True
    num_to_keep: int | None = 1
    checkpoint: bool = True
    env: tuple[tuple[str, str], ...] = ()
    verbose: int | None = None  # None: Tune's default, as the sweep uses
    prewarm: bool = False  # import torch + Tune in `slots` pool workers before fit() (untimed)
    sweep_callbacks: bool = False  # visiontune's CSV/JSON/TensorBoard/status callbacks instead
    optuna_storage: str | None = None  # TPE + ASHA, study in "sqlite", "journal" or "memory"


@dataclass(frozen=True)
class Measurement:
    variant: Variant
    trials: int
    wall: float
    compute: float
    imports: float  # sum over trials of (torch imported - function entered)
    in_trial: float  # sum over trials of (last report sent - torch imported)
    startup: float  # slot-seconds from fit() start to each slot's first trial function
    tail: float  # slot-seconds from each slot's last trial function end to fit() return
    actors: int
    prewarm_s: float  # untimed warm-up before fit(); 0 when the variant has none
    prewarmed_trials: int  # trials that ran in a worker process the warm-up had prepared

    def ideal(self, slots: int) -> float:
        return self.compute / slots

    def ratio(self, slots: int) -> float:
        return self.wall / self.ideal(slots)

    def overhead_per_trial(self, slots: int) -> float:
        return (self.wall * slots - self.compute) / self.trials


def run_variant(
    variant: Variant, trials: int, slots: int, epochs: int, iterations: int, storage: Path
) -> Measurement:
    from ray import tune

    saved = {key: os.environ.get(key) for key, _ in variant.env}
    os.environ.update(dict(variant.env))
    try:
        trainable = tune.with_resources(fixed_work_trainable, {"cpu": 1})
        constants = {"epochs": epochs, "iterations": iterations, "checkpoint": variant.checkpoint}
        name = variant.label.replace(" ", "_").replace("=", "-")
        search = {} if variant.optuna_storage else {"x": tune.uniform(0, 1)}
        tuner = tune.Tuner(
            trainable,
            param_space={**constants, **search},
            tune_config=tune.TuneConfig(
                num_samples=trials,
                max_concurrent_trials=slots,
                reuse_actors=variant.reuse_actors,
                **(
                    optuna_asha(variant.optuna_storage, storage / name, epochs)
                    if variant.optuna_storage
                    else {}
                ),
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                verbose=variant.verbose,
                callbacks=sweep_callbacks(storage / name, constants)
                if variant.sweep_callbacks
                else None,
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=variant.num_to_keep,
                    checkpoint_score_attribute="score",
                    checkpoint_score_order="max",
                ),
            ),
        )
        prewarm_s, warm_pids = prewarm_workers(slots) if variant.prewarm else (0.0, set())
        start = time.time()
        results = tuner.fit()
        end = time.time()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if results.num_errors:
        raise RuntimeError(f"{variant.label}: {results.num_errors} trial(s) errored")
    finals = [result.metrics for result in results]
    incomplete = [m for m in finals if m.get("epoch") != epochs]
    if incomplete:
        raise RuntimeError(f"{variant.label}: {len(incomplete)} trial(s) did not finish")
    starts = sorted(m["trial_entered"] for m in finals)[:slots]
    ends = sorted(m["trial_ended"] for m in finals)[-slots:]
    return Measurement(
        variant=variant,
        trials=len(finals),
        wall=end - start,
        compute=sum(m["busy_total_s"] for m in finals),
        imports=sum(m["trial_started"] - m["trial_entered"] for m in finals),
        in_trial=sum(m["trial_ended"] - m["trial_started"] for m in finals),
        startup=sum(t - start for t in starts),
        tail=sum(end - t for t in ends),
        actors=len({m["pid"] for m in finals}),
        prewarm_s=prewarm_s,
        prewarmed_trials=sum(m["pid"] in warm_pids for m in finals),
    )


def sweep_callbacks(exp_dir: Path, constants: dict[str, Any]) -> list:
    """The callbacks `visiontune.sweep.build_tuner` installs, for this benchmark's parameters."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from visiontune.callbacks import TensorBoardCallback, TrialStatusCallback
    from visiontune.spec import Distribution

    search = {"x": Distribution("uniform", 0.0, 1.0)}
    return [
        CSVLoggerCallback(),
        JsonLoggerCallback(),
        TensorBoardCallback(exp_dir, constants, search, ("score", "epoch")),
        TrialStatusCallback(exp_dir, constants["epochs"]),
    ]


def optuna_asha(kind: str, path: Path, epochs: int) -> dict[str, Any]:
    """Search and scheduler as the sweep builds them (TPE, study in `kind` storage, ASHA on
    epochs); the grace period is the full budget so every trial does the same fixed work."""
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    storages = {
        "sqlite": lambda: optuna.storages.RDBStorage(f"sqlite:///{path}.db"),  # the sweep's
        "journal": lambda: optuna.storages.JournalStorage(JournalFileBackend(f"{path}.log")),
        "memory": lambda: None,
    }
    searcher = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
        metric="score",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10),
        study_name=path.name,
        storage=storages[kind](),
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        metric="score",
        mode="max",
        max_t=epochs,
        grace_period=epochs,
    )
    return {"search_alg": searcher, "scheduler": scheduler}


def print_optuna_storage_costs(trials: int = 20, epochs: int = 4) -> None:
    """Driver-side milliseconds of the Optuna calls OptunaSearch makes: ask per trial start,
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


def _import_trial_modules() -> int:
    import torch  # noqa: F401
    from ray.tune.trainable import function_trainable  # noqa: F401

    time.sleep(0.5)  # hold the worker so each of the `slots` calls lands on a different one
    return os.getpid()


def prewarm_workers(slots: int) -> tuple[float, set[int]]:
    """Run one task per slot that imports what a trial imports; Ray keeps those worker processes
    idle in its pool and may start Tune's trial actors in them. Returns (seconds, worker pids)."""
    import ray

    start = time.perf_counter()
    task = ray.remote(num_cpus=1)(_import_trial_modules)
    pids = set(ray.get([task.remote() for _ in range(slots)]))
    return time.perf_counter() - start, pids


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


def variants(compare_reuse: bool, investigate: bool, prewarm: bool) -> list[Variant]:
    chosen = [Variant("sweep settings")]
    if compare_reuse:
        chosen.append(Variant("reuse_actors=False", reuse_actors=False))
    if investigate:
        no_loggers = (("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"),)
        chosen += [
            Variant("num_to_keep=None", num_to_keep=None),
            Variant("no checkpoint", checkpoint=False, num_to_keep=None),
            Variant("no auto loggers", env=no_loggers),
            Variant("verbose=0", verbose=0),
            Variant("keep=None,no loggers,verbose=0", num_to_keep=None, env=no_loggers, verbose=0),
            Variant("sweep callbacks", env=no_loggers, sweep_callbacks=True),
            Variant("optuna TPE sqlite + ASHA", optuna_storage="sqlite"),
            Variant("optuna TPE journal + ASHA", optuna_storage="journal"),
            Variant("optuna TPE in-memory + ASHA", optuna_storage="memory"),
            Variant(
                "callbacks+optuna sqlite+ASHA",
                env=no_loggers,
                sweep_callbacks=True,
                optuna_storage="sqlite",
            ),
            Variant("sweep settings (again)"),  # shows drift in machine load over the run
        ]
    if prewarm:
        chosen.append(Variant("sweep settings + prewarm", prewarm=True))
    return chosen


def print_table(measurements: list[Measurement], slots: int) -> None:
    header = (
        f"{'variant':<32}{'trials':>7}{'actors':>7}{'wall s':>9}{'ideal s':>9}{'ratio':>7}"
        f"{'ovh slot-s/trial':>18}{'in-trial':>10}{'import':>8}{'startup':>9}{'between':>9}"
        f"{'tail':>7}{'recurring':>11}  goals"
    )
    print(header)
    print("-" * len(header))
    for m in measurements:
        ratio, per_trial = m.ratio(slots), m.overhead_per_trial(slots)
        in_trial = (m.in_trial - m.compute) / m.trials  # report/checkpoint waits inside the trial
        # slot-seconds with no trial function running
        idle = m.wall * slots - m.in_trial - m.imports
        between = (idle - m.startup - m.tail) / m.trials
        goals = "MET" if ratio <= GOAL_RATIO and per_trial <= GOAL_SLOT_S_PER_TRIAL else "missed"
        print(
            f"{m.variant.label:<32}{m.trials:>7}{m.actors:>7}{m.wall:>9.2f}{m.ideal(slots):>9.2f}"
            f"{ratio:>7.3f}{per_trial:>18.3f}{in_trial:>10.3f}{m.imports / m.trials:>8.3f}"
            f"{m.startup / m.trials:>9.3f}"
            f"{between:>9.3f}{m.tail / m.trials:>7.3f}{in_trial + between:>11.3f}  {goals}"
        )
    print(
        "\ncolumns: ratio = wall / ideal, ideal = total measured compute / slots; "
        "ovh = (wall*slots - compute) / trials, the sum of (all per trial):\n"
        "  in-trial: trial-function time that is not compute, up to the last report (checkpoint\n"
        "            writes + report round trips of epochs 1..N-1)\n"
        "  import:   `import torch` in the trial function (once per worker process)\n"
        "  startup:  fit() start to the first trial function on each slot (actor start, imports)\n"
        "  between:  last report sent to next trial function start (last round trip, trial end,\n"
        "            actor reset or restart, scheduling)\n"
        "  tail:     last trial function end on each slot to fit() return\n"
        "  recurring = in-trial + between: the part that does not shrink with more trials per slot\n"
        f"Goals: ratio <= {GOAL_RATIO}, ovh <= {GOAL_SLOT_S_PER_TRIAL}."
    )
    for m in measurements:
        if m.variant.prewarm:
            print(
                f"{m.variant.label}: warm-up took {m.prewarm_s:.2f} s before fit() (not in wall); "
                f"{m.prewarmed_trials}/{m.trials} trials ran in a warmed worker process"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 trials of ~1 s (< 60 s)")
    parser.add_argument("--trials", type=int, default=None, help="default 40 (12 with --quick)")
    parser.add_argument("--slots", type=int, default=2, help="ray.init(num_cpus=slots)")
    parser.add_argument("--epochs", type=int, default=4, help="reports per trial")
    parser.add_argument("--epoch-s", type=float, default=None, help="default 0.5 (0.25 quick)")
    parser.add_argument("--compare-reuse", action="store_true", help="also reuse_actors=False")
    parser.add_argument("--investigate", action="store_true", help="one run per setting")
    parser.add_argument(
        "--prewarm", action="store_true", help="also warm pool workers before fit() (prototype)"
    )
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
        f" (calibrated to ~{epoch_s} s per epoch on 1 thread), {args.slots} slots of cpu=1"
    )
    measurements = []
    # Ray's, Tune's and the workers' console output goes to a file (some of it arrives late)
    with (
        tempfile.TemporaryDirectory(prefix="vt_orch_") as storage,
        console_to(Path(storage) / "ray_console.log"),
    ):
        ray.init(address="local", include_dashboard=False, num_cpus=args.slots)
        try:
            for variant in variants(args.compare_reuse, args.investigate, args.prewarm):
                measurements.append(
                    run_variant(variant, trials, args.slots, args.epochs, iterations, Path(storage))
                )
        finally:
            ray.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print_table(measurements, args.slots)
    if args.investigate:
        print_optuna_storage_costs()


if __name__ == "__main__":
    main()
