"""Scale: a 500-trial classifier sweep run as a user runs it, and what grows with the trial count.

Run (from the repository root):

    .venv/bin/python benchmarks/scale.py                    # 500 trials (see benchmarks/README.md)
    .venv/bin/python benchmarks/scale.py --trials 30        # a development run, ~1-2 min here
    .venv/bin/python benchmarks/scale.py --keep /tmp/scale  # keep the experiment, logs, samples

The command under test is exactly (a subprocess; Ray starts embedded on 127.0.0.1, one slot per CPU)
    visiontune tune SPACE --data DATA --set width=4 --num-samples 500 --max-epochs 2
        --storage STORAGE --name scale
SPACE is search_spaces/classifier.yaml with one change, ASHA's grace period of 1 epoch (the shipped
2 equals the 2-epoch budget, so nothing would be stopped): about two thirds of the trials stop after
epoch 1, as in a real ASHA sweep; the searcher (TPE on the SQLite study), scheduler, loggers, ledger
and checkpoint retention are the product's. DATA: --images images of the embedded IR solar-module
generator written as an ImageFolder (`visiontune.data.ir_solar.write_imagefolder`, the writer behind
`visiontune data make`). Width 4 and 2 epochs keep a trial around a second of training, so the
sweep's own costs per trial are what the run shows.

What is measured (goals in brackets), all from the one run:
* trials recorded [all N, none lost]: rows of report/trials.csv, ledger entries (trial_status.json;
  none LOST, RUNNING or RETRYING), Optuna study trials (all finished), trial directories; exit 0.
* wall vs sum of trial times: Tuner.fit's wall time (sweep.json) and the whole command, against the
  sum of Ray's `time_total_s` (each trial function's own time, all epochs) spread over the slots.
* per-trial overhead [trials N-W+1..N within 1.2x of trials 1..W, W = 50 or N/2]: for each trial,
  the time from its start to the start of the next trial on the same Ray actor (reuse_actors keeps
  one actor per slot; the actor is the worker `pid` in result.json) minus its `time_total_s`: the
  trial's report round trips plus the hand-over to the next trial (searcher ask, scheduling, actor
  reset, loggers). Start times are the driver's clock: the HParams session-start event visiontune's
  TensorBoard callback writes in `on_trial_start`. Medians over the two windows in start order (a
  slot's last trial has no successor and is left out); the Theil-Sen slope over all trials.
* driver CPU per trial: the `visiontune tune` process's CPU seconds (user + system, sampled each
  second) per trial started, trials 2..W+1 vs N-W..N: what the driver itself spends per trial,
  which other jobs' load hardly moves (the wall-clock overhead above moves with it).
* driver peak RSS [< 2 GiB]: VmHWM of the `visiontune tune` process (/proc, read every second);
  Ray's processes (the driver's descendants: GCS, raylet, agents, workers) summed separately, with
  the ones that grew most. Slopes: RSS per 100 trials started, from 10% of the trials started to
  the last trial's start.
* checkpoints kept [<= 2 per trial]: `checkpoint_*` dirs per trial. The rule
  (visiontune/sweep/tuner.py): `CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric)`:
  Ray keeps a trial's best-scoring checkpoint (what the test table evaluates) and, while that is not
  also the latest, the latest (what a retry or `--resume` restores from).
* experiment directory bytes per trial (with the share of checkpoints, TensorBoard events, Ray's
  files, the study) and TensorBoard events (every `events.out.tfevents.*`).
* Optuna ask/tell at W and at N study trials: the sweep's own StudySearcher
  (`visiontune.sweep.tuner.build_searcher` over the experiment's spec.yaml) on a copy of the sweep's
  optuna.db cut to its first k trials (SQLite, as in the sweep): `suggest` (ask), `record` per epoch
  (report), `on_trial_complete` (tell); median of --reps.
* driver writes that grow with every trial, timed at W and N trials: the ledger rewrite on each
  trial event (visiontune's TrialStatusCallback with k entries) and Ray's experiment snapshot, which
  `num_to_keep` forces after every checkpoint (ray 2.60.0, experiment_state.py): its
  experiment_state JSON cut to k trials, dumped, then the copy of the driver's staging dir (state
  files + k trial dirs of params/result/progress files) to the storage, as Ray's syncer does it
  (`pyarrow.fs.copy_files`; the driver waits for the previous copy before a forced snapshot).
* `visiontune report EXP` [< 30 s], also on copies of the experiment cut to its first W and N/2
  trials (trial dirs without checkpoints, ledger and study cut alike) for a slope; and
  TensorBoard: `tensorboard --logdir EXP --host 127.0.0.1 --port FREE` from start until its
  /data/runs lists every trial's run.
Times are wall clock on a machine other jobs share: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import psutil
import yaml

from visiontune.sweep import keep_ray_on_loopback

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "classifier.yaml"
NAME = "scale"
WINDOW = 50
GOAL_OVERHEAD_RATIO = 1.2
GOAL_DRIVER_RSS = 2 * 1024**3
GOAL_CHECKPOINTS = 2  # per trial: the best and the latest (see the docstring)
GOAL_REPORT_S = 30.0
MiB = 1024**2
ROWS = (  # the measured rows, in the order printed (the smoke test checks every one)
    "trials recorded",
    "wall vs sum of trial times",
    "per-trial overhead",
    "driver CPU per trial",
    "driver peak RSS",
    "Ray processes RSS",
    "checkpoints kept",
    "experiment dir",
    "TensorBoard events",
    "Optuna ask/tell",
    "ledger rewrite",
    "Ray experiment snapshot",
    "visiontune report",
    "TensorBoard open",
)
SESSION_START = "_hparams_/session_start_info"  # the HParams tag visiontune writes on trial start
RAY_STATE_FILES = ("experiment_state-", "searcher-state-", "search_gen_state-", "tuner.pkl")
TRIAL_LOG_FILES = ("params.json", "params.pkl", "result.json", "progress.csv")


@dataclass(frozen=True)
class TrialTime:
    trial_id: str
    actor: int  # the worker pid: with reuse_actors, one actor per slot
    start: float  # driver clock, on_trial_start
    train_s: float  # Ray's time_total_s: the trial function's own time, all epochs
    epochs: int


@dataclass(frozen=True)
class Sample:
    time: float  # time.time(), the clock of the trials' start events
    trials: int  # trials started so far
    driver_rss: int  # bytes
    ray_rss: int  # bytes, summed over the driver's descendants
    load: float  # 1-minute load average
    driver_cpu: float  # the driver's user + system CPU seconds so far


@dataclass
class Monitor:
    """Samples the driver process and its descendants (Ray's processes) once per call."""

    pid: int
    exp: Path
    trials: int  # the sweep's num_samples
    samples: list[Sample] = field(default_factory=list)
    driver_hwm: int = 0  # bytes, VmHWM: the kernel's own peak, so a peak between polls counts
    ray_peak: int = 0
    # Ray's RSS by process kind once 10% of the trials started, and at the last sample before
    # every trial started (the Ray row says which processes grew in between)
    ray_early: Counter = field(default_factory=Counter)
    ray_late: Counter = field(default_factory=Counter)

    def poll(self) -> None:
        try:
            driver = psutil.Process(self.pid)
            rss = driver.memory_info().rss
            cpu = driver.cpu_times()
            children = driver.children(recursive=True)
        except psutil.Error:
            return
        if not rss:  # exited, not yet reaped
            return
        self.driver_hwm = max(self.driver_hwm, _vm_hwm(self.pid), rss)
        by_name: Counter = Counter()
        for child in children:
            try:
                by_name[process_kind(child.name())] += child.memory_info().rss
            except psutil.Error:
                continue
        ray = sum(by_name.values())
        self.ray_peak = max(self.ray_peak, ray)
        started = trials_started(self.exp)
        if started >= early_trials(self.trials) and not self.ray_early:
            self.ray_early = by_name
        if started < self.trials:
            self.ray_late = by_name
        load, cpu_s = os.getloadavg()[0], cpu.user + cpu.system
        self.samples.append(Sample(time.time(), started, rss, ray, load, cpu_s))


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def early_trials(trials: int) -> int:
    """Trials started before the memory slopes begin: imports, Ray's start and the dataset's
    decoding are done by then."""
    return max(3, trials // 10)


def process_kind(name: str) -> str:
    """A Ray process's name, with every worker under one name: a worker's title changes with
    what it runs (ray::IDLE, ray::ImplicitFunc.train, ray::ImplicitFunc.reset, ...)."""
    if name.startswith("ray::") and not name.endswith("Agent"):
        return "workers"
    return name


def growth(early: Counter, late: Counter, top: int = 3) -> str:
    """The kinds of process whose RSS grew most between two breakdowns."""
    grown = sorted(((late[n] - early.get(n, 0), n) for n in late), reverse=True)[:top]
    return ", ".join(f"{name} {delta / MiB:+.0f} MiB" for delta, name in grown) or "n/a"


def trials_started(exp: Path) -> int:
    """Trial directories so far (the TensorBoard callback creates one when a trial starts)."""
    try:
        return sum(1 for e in os.scandir(exp) if e.name.startswith("trial_") and e.is_dir())
    except OSError:
        return 0


def scale_space(out: Path) -> Path:
    """The shipped classifier space with ASHA's grace period at 1 epoch."""
    spec = yaml.safe_load(SPACE.read_text())
    spec["scheduler"] = {**spec["scheduler"], "grace_period": 1}
    path = out / "classifier_scale.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@dataclass(frozen=True)
class SweepRun:
    code: int  # exit status of `visiontune tune`
    seconds: float  # the whole command
    monitor: Monitor
    largest_child: int  # bytes: the largest RSS getrusage(RUSAGE_CHILDREN) saw


def run_sweep(
    command: Sequence[str], exp: Path, trials: int, log: Path, progress_s: float
) -> SweepRun:
    """Run the sweep command, sampling memory each second."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        monitor = Monitor(proc.pid, exp, trials)
        next_note = progress_s
        while proc.poll() is None:
            elapsed = time.perf_counter() - start
            monitor.poll()
            if elapsed >= next_note and monitor.samples:
                next_note += progress_s
                now = monitor.samples[-1]
                print(f"[{elapsed:6.0f} s] {now.trials} trials started, driver RSS "
                      f"{now.driver_rss / MiB:.0f} MiB, Ray processes {now.ray_rss / MiB:.0f} MiB, "
                      f"load average {now.load:.1f}", flush=True)  # fmt: skip
            time.sleep(1.0)
    largest_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB here
    return SweepRun(proc.returncode, time.perf_counter() - start, monitor, largest_child)


def trial_dirs(exp: Path) -> list[Path]:
    return sorted(p for p in exp.iterdir() if p.is_dir() and (p / "params.json").exists())


def session_start(trial_dir: Path) -> float | None:
    """When the driver called on_trial_start: the trial's HParams session-start event."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    for path in sorted(trial_dir.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            if any(value.tag == SESSION_START for value in event.summary.value):
                return event.wall_time
    return None


def trial_times(exp: Path) -> list[TrialTime]:
    """Every trial that reported at least one epoch, in start order."""
    from visiontune.analysis.results import read_result_lines

    times = []
    for path in trial_dirs(exp):
        rows = read_result_lines(path / "result.json")
        start = session_start(path)
        if not rows or start is None or "pid" not in rows[-1]:
            continue
        last = rows[-1]
        trial_id, pid = last.get("trial_id", path.name), int(last["pid"])
        train_s, epochs = float(last["time_total_s"]), int(last["training_iteration"])
        times.append(TrialTime(trial_id, pid, start, train_s, epochs))
    return sorted(times, key=lambda t: t.start)


def trial_overheads(trials: Sequence[TrialTime]) -> list[tuple[int, float]]:
    """(position in start order from 1, overhead s) of every trial that has a successor on its
    actor: next start on the actor - its start - its training time."""
    ordered = sorted(trials, key=lambda t: t.start)
    previous: dict[int, tuple[int, TrialTime]] = {}
    overheads = []
    for position, trial in enumerate(ordered, start=1):
        if trial.actor in previous:
            index, before = previous[trial.actor]
            overheads.append((index, trial.start - before.start - before.train_s))
        previous[trial.actor] = (position, trial)
    return sorted(overheads)


def window_medians(
    overheads: Sequence[tuple[int, float]], trials: int, window: int
) -> tuple[float | None, float | None]:
    """Median overhead of the trials at positions 1..window and trials-window+1..trials."""
    first = [o for i, o in overheads if i <= window]
    last = [o for i, o in overheads if i > trials - window]
    return (statistics.median(first) if first else None, statistics.median(last) if last else None)


def window_context(trials: Sequence[TrialTime], samples: Sequence[Sample], window: int) -> str:
    """Training time per epoch and the load average in the first and last window: on a shared
    machine the overhead moves with them."""
    spans = (trials[:window], trials[-window:])
    per_epoch = [statistics.median(t.train_s / t.epochs for t in span) for span in spans]
    loads = []
    for span in spans:
        end = span[-1].start + span[-1].train_s
        inside = [m.load for m in samples if span[0].start <= m.time <= end]
        loads.append(f"{statistics.median(inside):.1f}" if inside else "n/a")
    return (f"training per epoch {per_epoch[0] * 1000:.0f} -> {per_epoch[1] * 1000:.0f} ms, "
            f"load average {loads[0]} -> {loads[1]}")  # fmt: skip


def cpu_per_trial(samples: Sequence[Sample], low: int, high: int) -> float | None:
    """The driver's CPU seconds per trial started between the first samples that saw `low`
    and `high` trials started; None when the samples do not cover both."""
    at_low = next((m for m in samples if m.trials >= low), None)
    at_high = next((m for m in samples if m.trials >= high), None)
    if at_low is None or at_high is None or at_high.trials <= at_low.trials:
        return None
    return (at_high.driver_cpu - at_low.driver_cpu) / (at_high.trials - at_low.trials)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Theil-Sen slope of ys over xs (robust to the spikes a shared machine adds); None for
    fewer than 2 distinct xs."""
    if len(set(xs)) < 2:
        return None
    from scipy.stats import theilslopes

    return float(theilslopes(ys, xs)[0])


def records(exp: Path) -> tuple[dict[str, int], Counter, Counter]:
    """How many trials each of the sweep's records holds; ledger and study states."""
    import optuna
    import pandas as pd

    from visiontune.sweep.ledger import read_ledger

    ledger = read_ledger(exp)
    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'optuna.db'}")
    study_trials = study.get_trials(deepcopy=False)
    csv = exp / "report" / "trials.csv"
    counts = {
        "trials.csv": len(pd.read_csv(csv)) if csv.exists() else 0,
        "ledger": len(ledger),
        "study": len(study_trials),
        "trial dirs": len(trial_dirs(exp)),
    }
    statuses = Counter(entry.get("status", "?") for entry in ledger.values())
    states = Counter(t.state.name for t in study_trials)
    return counts, statuses, states


def disk_usage(exp: Path) -> tuple[dict[str, int], list[int]]:
    """Bytes by kind of file, and the checkpoint count of each trial."""
    usage: Counter = Counter()
    for root, _, files in os.walk(exp):
        relative = Path(root).relative_to(exp)
        for name in files:
            size = (Path(root) / name).stat().st_size
            if any(part.startswith("checkpoint_") for part in relative.parts):
                usage["checkpoints"] += size
            elif name.startswith("events.out.tfevents."):
                usage["events"] += size
            elif name == "optuna.db":
                usage["study"] += size
            elif name.endswith(".log"):
                usage["logs"] += size
            elif name.startswith(RAY_STATE_FILES) or name in TRIAL_LOG_FILES:
                usage["ray"] += size
            else:
                usage["other"] += size
    checkpoints = [len(list(p.glob("checkpoint_*"))) for p in trial_dirs(exp)]
    return dict(usage), checkpoints


def study_costs(exp: Path, sizes: Sequence[int], reps: int, scratch: Path) -> dict:
    """{k: (ask, report per epoch, tell, ask in memory) seconds}: the sweep's StudySearcher on a
    SQLite copy of the sweep's study cut to its first k trials, and the same sampler asking an
    in-memory copy (its own compute, without the storage). Interleaved over k, so that load
    from other jobs (SQLite commits wait for the disk) hits every k alike."""
    import optuna

    from visiontune.spec import read_yaml, validate
    from visiontune.sweep.tuner import build_sampler, build_searcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = validate(read_yaml(exp / "spec.yaml"), str(exp / "spec.yaml"))
    source = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'optuna.db'}")
    frozen = sorted(source.get_trials(deepcopy=False), key=lambda t: t.number)
    space = {name: dist.to_optuna() for name, dist in spec.search.items()}
    searchers, memories = {}, {}
    for k in sizes:
        study_file = scratch / f"study-{k}" / "optuna.db"
        study_file.parent.mkdir()
        copy = optuna.create_study(
            storage=f"sqlite:///{study_file}", study_name=exp.name, direction=source.direction
        )
        copy.add_trials(frozen[:k])
        searchers[k] = build_searcher(spec, study_file, exp.name)
        memories[k] = optuna.create_study(sampler=build_sampler(spec), direction=source.direction)
        memories[k].add_trials(frozen[:k])
    timings: dict[int, list[tuple[float, float, float, float]]] = {k: [] for k in sizes}
    for rep in range(reps + 1):  # the first opens the study and warms the sampler: not timed
        for k in sizes:
            searcher, trial_id = searchers[k], f"scale{rep}"
            t0 = time.perf_counter()
            searcher.suggest(trial_id)
            t1 = time.perf_counter()
            for epoch in range(1, spec.epochs + 1):
                searcher.record(trial_id, {spec.metric: 0.5, "epoch": epoch})
            t2 = time.perf_counter()
            searcher.on_trial_complete(trial_id, {spec.metric: 0.5, "epoch": spec.epochs})
            t3 = time.perf_counter()
            trial = memories[k].ask(space)
            t4 = time.perf_counter()
            memories[k].tell(trial, 0.5)
            timings[k].append((t1 - t0, (t2 - t1) / spec.epochs, t3 - t2, t4 - t3))
    return {
        k: tuple(statistics.median(column) for column in zip(*rows[1:], strict=True))
        for k, rows in timings.items()
    }


def ledger_costs(exp: Path, sizes: Iterable[int], reps: int, scratch: Path, epochs: int) -> dict:
    """{k: (seconds, bytes)} of one ledger rewrite by visiontune's TrialStatusCallback holding
    the sweep's first k ledger entries."""
    from visiontune.callbacks import TrialStatusCallback
    from visiontune.layout import STATUS_FILE
    from visiontune.sweep.ledger import read_ledger

    entries = list(read_ledger(exp).items())
    costs = {}
    for k in sizes:
        folder = scratch / f"ledger-{k}"
        folder.mkdir()
        callback = TrialStatusCallback(folder, epochs)
        callback.status = {trial_id: dict(entry) for trial_id, entry in entries[:k]}
        trial = SimpleNamespace(trial_id=entries[0][0], path=str(folder / "trial"),
                                local_experiment_path=str(folder))  # fmt: skip
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            callback.on_trial_result(0, [], trial, {"training_iteration": 1})
            times.append(time.perf_counter() - t0)
        costs[k] = (statistics.median(times), (folder / STATUS_FILE).stat().st_size)
    return costs


def snapshot_costs(exp: Path, sizes: Sequence[int], reps: int, scratch: Path) -> dict:
    """{k: (dump s, copy s, state bytes)} of Ray's experiment snapshot with k trials: the
    experiment_state JSON dumped into a staging dir, then the staging dir (state files and k
    trial dirs of Ray's logger files) copied to a storage dir the way Ray's syncer does.
    Interleaved over k, like `study_costs`."""
    import pyarrow.fs

    state_file = max(exp.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    dirs = trial_dirs(exp)
    local = pyarrow.fs.LocalFileSystem()
    for k in sizes:
        staging = scratch / f"snapshot-{k}" / "driver_artifacts"
        staging.mkdir(parents=True)
        for path in dirs[:k]:
            (staging / path.name).mkdir()
            for name in TRIAL_LOG_FILES:
                if (path / name).exists():
                    shutil.copy2(path / name, staging / path.name / name)
        for path in exp.iterdir():
            if path.is_file() and path.name.startswith(RAY_STATE_FILES[1:]):
                shutil.copy2(path, staging / path.name)
    timings: dict[int, list[tuple[float, float]]] = {k: [] for k in sizes}
    for _ in range(reps + 1):  # the first copy creates the files: not timed
        for k in sizes:
            staging = scratch / f"snapshot-{k}" / "driver_artifacts"
            subset = {**state, "trial_data": state["trial_data"][:k]}
            t0 = time.perf_counter()
            with (staging / state_file.name).open("w") as out:
                json.dump(subset, out)
            t1 = time.perf_counter()
            pyarrow.fs.copy_files(str(staging), str(staging.parent / "storage"),
                                  destination_filesystem=local, chunk_size=64 * MiB)  # fmt: skip
            timings[k].append((t1 - t0, time.perf_counter() - t1))
    costs = {}
    for k, rows in timings.items():
        size = (scratch / f"snapshot-{k}" / "driver_artifacts" / state_file.name).stat().st_size
        dumps, copies = zip(*rows[1:], strict=True)
        costs[k] = (statistics.median(dumps), statistics.median(copies), size)
    return costs


def time_report(exp: Path) -> tuple[float, int]:
    """Seconds and exit status of `visiontune report EXP` (a subprocess, as a user runs it)."""
    exe = str(Path(sys.executable).with_name("visiontune"))
    start = time.perf_counter()
    done = subprocess.run([exe, "report", str(exp)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"visiontune report {exp}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return seconds, done.returncode


def experiment_cut(exp: Path, keep: set[str], out: Path) -> Path:
    """A copy of the experiment holding only the trials `keep` (ids): their trial dirs without
    checkpoints, the ledger and the Optuna study cut to them, every other top-level file as it
    is (the report's own directory left out)."""
    import optuna

    from visiontune.fileio import write_json
    from visiontune.layout import REPORT_DIR, STATUS_FILE, STUDY_FILE
    from visiontune.sweep.ledger import read_ledger
    from visiontune.sweep.searcher import TRIAL_ID_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cut = out / exp.name
    cut.mkdir(parents=True)
    for path in exp.iterdir():
        if path.name in (REPORT_DIR, STUDY_FILE, STATUS_FILE):
            continue
        if path.is_file():
            shutil.copy2(path, cut / path.name)
        elif path.name.removeprefix("trial_") in keep:
            shutil.copytree(path, cut / path.name, ignore=shutil.ignore_patterns("checkpoint_*"))
    ledger = read_ledger(exp)
    write_json(cut / STATUS_FILE, {k: v for k, v in ledger.items() if k in keep})
    source = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / STUDY_FILE}")
    study = optuna.create_study(
        storage=f"sqlite:///{cut / STUDY_FILE}", study_name=exp.name, direction=source.direction
    )
    study.add_trials(
        [t for t in source.get_trials(deepcopy=False) if t.user_attrs.get(TRIAL_ID_ATTR) in keep]
    )
    return cut


def report_costs(done: Finished, sizes: Sequence[int]) -> dict[int, tuple[float, int]]:
    """{k: (seconds, exit status)} of `visiontune report` on a copy of the experiment cut to
    its first k trials (start order); at every trial, the sweep's own directory."""
    costs = {}
    for k in sizes:
        exp = done.exp
        if k < len(done.trials):
            keep = {t.trial_id for t in done.trials[:k]}
            exp = experiment_cut(done.exp, keep, done.scratch / f"report-{k}")
        costs[k] = time_report(exp)
    return costs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_tree(proc: subprocess.Popen) -> None:
    """End `proc` and the processes it started (TensorBoard's data server), each by its pid."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in children:
        try:
            child.terminate()
            child.wait(timeout=5)
        except psutil.TimeoutExpired:
            child.kill()
        except psutil.Error:
            pass


def time_tensorboard(exp: Path, trials: int, log: Path, timeout: float) -> tuple[float | None, int]:
    """Seconds from `tensorboard --logdir EXP` starting until /data/runs lists `trials` trial runs
    (None after `timeout`), and the runs it listed last."""
    port = free_port()
    exe = str(Path(sys.executable).with_name("tensorboard"))
    command = [exe, "--logdir", str(exp), "--host", "127.0.0.1", "--port", str(port)]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    runs: list[str] = []
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            while time.perf_counter() - start < timeout and proc.poll() is None:
                try:
                    with opener.open(f"http://127.0.0.1:{port}/data/runs", timeout=5) as answer:
                        runs = json.load(answer)
                except (OSError, ValueError):
                    runs = runs or []
                if sum(run.startswith("trial_") for run in runs) >= trials:
                    return time.perf_counter() - start, len(runs)
                time.sleep(0.25)
            return None, len(runs)
        finally:
            stop_process_tree(proc)


def sizes_between(low: int, high: int) -> list[int]:
    """Trial counts at which the driver costs are timed: W, N and the point halfway."""
    return sorted({max(1, low), max(1, (low + high) // 2), max(1, high)})


def per_100(value: float | None, unit: float = 1.0, fmt: str = "+.1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value * 100 / unit:{fmt}}{suffix} per 100 trials"


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


Row = tuple[str, str, str, str]  # measure, value, goal, verdict


@dataclass(frozen=True)
class Finished:
    """A finished sweep and what the benchmark read from it."""

    args: argparse.Namespace
    scratch: Path
    exp: Path
    run: SweepRun
    trials: list[TrialTime]  # in start order

    @property
    def window(self) -> int:
        return max(1, min(WINDOW, self.args.trials // 2))


def sweep(args: argparse.Namespace, scratch: Path) -> Finished:
    """Write the dataset and the space, run `visiontune tune` and read the trials' times."""
    from visiontune.data import ir_solar

    data = ir_solar.write_imagefolder(scratch / "ir", num_images=args.images, seed=3)
    storage = scratch / "runs"
    command = [
        str(Path(sys.executable).with_name("visiontune")), "tune", str(scale_space(scratch)),
        "--data", str(data), "--set", f"width={args.width}", "--num-samples", str(args.trials),
        "--max-epochs", str(args.epochs), "--storage", str(storage), "--name", NAME,
    ]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    log = scratch / "driver.log"
    run = run_sweep(command, storage / NAME, args.trials, log, args.progress)
    print(f"visiontune tune exited {run.code} after {run.seconds:.1f} s; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    (scratch / "samples.csv").write_text(
        "time,trials_started,driver_rss,ray_rss,load,driver_cpu_s\n" + "".join(
            f"{m.time:.1f},{m.trials},{m.driver_rss},{m.ray_rss},{m.load:.2f},{m.driver_cpu:.2f}\n"
            for m in run.monitor.samples))  # fmt: skip
    if run.code != 0:
        print(log.read_text()[-3000:])
        raise SystemExit(f"the sweep failed (exit {run.code}); its log: {log}")
    return Finished(args, scratch, storage / NAME, run, trial_times(storage / NAME))


def record_rows(done: Finished) -> list[Row]:
    n = done.args.trials
    counts, statuses, states = records(done.exp)
    unfinished = sum(statuses[s] for s in ("LOST", "RUNNING", "RETRYING"))
    study_open = sum(v for s, v in states.items() if s in ("RUNNING", "WAITING"))
    complete = all(v == n for v in counts.values()) and not unfinished and not study_open
    return [("trials recorded",
             f"{' / '.join(f'{v} {k}' for k, v in counts.items())} of {n}; ledger "
             f"{dict(statuses)}; study {dict(states)}",
             f"all {n}, none lost", verdict(complete))]  # fmt: skip


def time_rows(done: Finished) -> list[Row]:
    summary = json.loads((done.exp / "sweep.json").read_text())
    slots, fit_s = int(summary["slots"]), float(summary["wall_time_s"])
    trials, window = done.trials, done.window
    trained = sum(t.train_s for t in trials)
    overheads = trial_overheads(trials)
    first, last = window_medians(overheads, len(trials), window)
    ratio = last / first if first and last is not None else None
    trend = slope([i for i, _ in overheads], [o for _, o in overheads])
    n, samples = done.args.trials, done.run.monitor.samples
    cpu_start = cpu_per_trial(samples, 2, window + 1)  # from the second start: set-up is done
    cpu_end = cpu_per_trial(samples, n - window, n)
    cpu_ratio = cpu_end / cpu_start if cpu_start and cpu_end is not None else None
    return [
        ("wall vs sum of trial times",
         f"fit {fit_s:.0f} s, command {done.run.seconds:.0f} s; trials {trained:.0f} s on {slots} "
         f"slots: fit / (sum / slots) = {fit_s / (trained / slots):.2f}",
         "recorded", "-"),
        ("per-trial overhead",
         f"median trials 1-{window}: {ms(first)}, {len(trials) - window + 1}-{len(trials)}: "
         f"{ms(last)}; ratio {'n/a' if ratio is None else f'{ratio:.2f}'}; slope "
         f"{per_100(trend, 1e-3, '+.1f', ' ms')}; same windows: "
         f"{window_context(trials, done.run.monitor.samples, window)}",
         f"end <= {GOAL_OVERHEAD_RATIO}x start",
         verdict(None if ratio is None else ratio <= GOAL_OVERHEAD_RATIO)),
        ("driver CPU per trial",
         f"trials 2-{window + 1}: {ms(cpu_start)}, {n - window}-{n}: {ms(cpu_end)}; ratio "
         f"{'n/a' if cpu_ratio is None else f'{cpu_ratio:.2f}'} (CPU time, unlike the wall "
         "time above, hardly moves with other jobs' load)",
         "recorded", "-"),
    ]  # fmt: skip


def memory_rows(done: Finished) -> list[Row]:
    monitor, n = done.run.monitor, done.args.trials
    late = [m for m in monitor.samples if early_trials(n) <= m.trials < n]  # while trials run
    rss_trend = slope([m.trials for m in late], [m.driver_rss for m in late])
    ray_trend = slope([m.trials for m in late], [m.ray_rss for m in late])
    final_rss = monitor.samples[-1].driver_rss if monitor.samples else 0
    return [
        ("driver peak RSS",
         f"{monitor.driver_hwm / MiB:.0f} MiB (VmHWM; {final_rss / MiB:.0f} MiB at the last "
         f"sample); {per_100(rss_trend, MiB, '+.1f', ' MiB')}; largest process getrusage saw "
         f"{done.run.largest_child / MiB:.0f} MiB",
         f"< {GOAL_DRIVER_RSS / 1024**3:.0f} GiB",
         verdict(0 < monitor.driver_hwm < GOAL_DRIVER_RSS)),
        ("Ray processes RSS",
         f"peak {monitor.ray_peak / MiB:.0f} MiB (sum over the driver's descendants); "
         f"{per_100(ray_trend, MiB, '+.1f', ' MiB')}; grew most: "
         f"{growth(monitor.ray_early, monitor.ray_late)}",
         "recorded", "-"),
    ]  # fmt: skip


def disk_rows(done: Finished) -> list[Row]:
    n = done.args.trials
    usage, checkpoints = disk_usage(done.exp)
    total, events, most = sum(usage.values()), usage.get("events", 0), max(checkpoints, default=0)
    metric = yaml.safe_load((done.exp / "spec.yaml").read_text())["metric"]
    shares = ", ".join(f"{k} {v / max(1, total):.0%}" for k, v in sorted(usage.items()))
    return [
        ("checkpoints kept",
         f"{sum(checkpoints)} in all, {sum(checkpoints) / n:.2f} per trial (max {most}), "
         f"{usage.get('checkpoints', 0) / MiB:.1f} MiB; rule: num_to_keep=1 by {metric} + the "
         "latest",
         f"<= {GOAL_CHECKPOINTS} per trial", verdict(0 < most <= GOAL_CHECKPOINTS)),
        ("experiment dir",
         f"{total / MiB:.1f} MiB, {total / n / 1024:.1f} KiB per trial ({shares})",
         "recorded", "-"),
        ("TensorBoard events", f"{events / MiB:.2f} MiB, {events / n / 1024:.1f} KiB per trial",
         "recorded", "-"),
    ]  # fmt: skip


def driver_cost_rows(done: Finished) -> list[Row]:
    args, exp, scratch = done.args, done.exp, done.scratch
    sizes = sizes_between(done.window, len(done.trials))
    study = study_costs(exp, sizes, args.reps, scratch)
    ledger = ledger_costs(exp, sizes, args.reps, scratch, args.epochs)
    snapshot = snapshot_costs(exp, sizes, args.reps, scratch)
    ask_tell = {k: a + t for k, (a, _, t, _) in study.items()}
    per_snapshot = {k: d + c for k, (d, c, _) in snapshot.items()}
    snapshot_trend = slope(list(per_snapshot), list(per_snapshot.values()))
    lo, hi = sizes[0], sizes[-1]
    return [
        ("Optuna ask/tell",
         "; ".join(f"{k} trials: ask {ms(a)} (sampler alone {ms(m)}), report {ms(r)}, "
                   f"tell {ms(t)}" for k, (a, r, t, m) in study.items())
         + f"; ask+tell {hi} vs {lo}: {ask_tell[hi] / ask_tell[lo]:.2f}x, "
         f"{per_100(slope(list(ask_tell), list(ask_tell.values())), 1e-3, '+.1f', ' ms')}",
         "recorded", "-"),
        ("ledger rewrite",
         "; ".join(f"{k} trials: {ms(s)} ({b / 1024:.1f} KiB)" for k, (s, b) in ledger.items())
         + f"; {per_100(slope(list(ledger), [s for s, _ in ledger.values()]), 1e-3, '+.2f', ' ms')}"
         "; once per trial start, result and end",
         "recorded", "-"),
        ("Ray experiment snapshot",
         "; ".join(f"{k} trials: dump {ms(d)} + copy {ms(c)} ({b / MiB:.1f} MiB state)"
                   for k, (d, c, b) in snapshot.items())
         + f"; {per_100(snapshot_trend, 1e-3, '+.1f', ' ms')}"
         f"; forced after each of the {sum(t.epochs for t in done.trials)} checkpoints",
         "recorded", "-"),
    ]  # fmt: skip


def opening_rows(done: Finished) -> list[Row]:
    reports = report_costs(done, sizes_between(done.window, len(done.trials)))
    report_s, report_code = reports[max(reports)]
    report_trend = slope(list(reports), [s for s, _ in reports.values()])
    dirs = len(trial_dirs(done.exp))
    tb_s, tb_runs = time_tensorboard(
        done.exp, dirs, done.scratch / "tensorboard.log", done.args.tensorboard_timeout
    )
    return [
        ("visiontune report",
         "; ".join(f"{k} trials: {t:.1f} s" + (f" (exit {c})" if c else "")
                   for k, (t, c) in reports.items())
         + f"; {per_100(report_trend, 1.0, '+.1f', ' s')} (fewer trials: copies of the "
         "experiment cut to them)",
         f"< {GOAL_REPORT_S:.0f} s", verdict(report_code == 0 and report_s < GOAL_REPORT_S)),
        ("TensorBoard open",
         f"{'timed out' if tb_s is None else f'{tb_s:.1f} s'} until /data/runs listed {tb_runs} "
         f"runs ({dirs} trials + the experiment's own)",
         "recorded", "-"),
    ]  # fmt: skip


def print_estimate(done: Finished) -> None:
    """For a smaller run: the wall time of an --estimate-for sweep, from the last window's pace."""
    n, target, window, trials = done.args.trials, done.args.estimate_for, done.window, done.trials
    if n >= target or len(trials) <= window:
        return
    pace = (trials[-1].start - trials[-window].start) / max(1, window - 1)
    print(f"\nextrapolated: {target} trials take about "
          f"{(done.run.seconds + (target - n) * pace) / 60:.0f} min here (the last {window} "
          f"trials started every {pace:.2f} s)")  # fmt: skip


def measure(args: argparse.Namespace, scratch: Path) -> list[Row]:
    """Run the sweep and every measurement; one row per entry of ROWS."""
    done = sweep(args, scratch)
    rows = [
        *record_rows(done),
        *time_rows(done),
        *memory_rows(done),
        *disk_rows(done),
        *driver_cost_rows(done),
        *opening_rows(done),
    ]
    print_estimate(done)
    return rows


def print_table(rows: Sequence[Row]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in (0, 2)]
    print(f"\n{'measure':{widths[0]}}  {'goal':{widths[1]}}  verdict  value")
    print("-" * (widths[0] + widths[1] + 20))
    for name, value, goal, judged in rows:
        print(f"{name:{widths[0]}}  {goal:{widths[1]}}  {judged:7s}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500, help="num_samples of the sweep")
    parser.add_argument("--epochs", type=int, default=2, help="epoch budget per trial (max_t)")
    parser.add_argument("--width", type=int, default=4, help="classifier width (--set width=)")
    parser.add_argument("--images", type=int, default=240, help="images in the generated set")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each driver timing")
    parser.add_argument("--progress", type=float, default=60.0, help="seconds between notes")
    parser.add_argument("--tensorboard-timeout", type=float, default=600.0)
    parser.add_argument("--estimate-for", type=int, default=500,
                        help="a smaller run estimates the time of a sweep this size")  # fmt: skip
    parser.add_argument("--keep", type=Path, help="keep everything in this new directory")
    args = parser.parse_args()
    if args.trials < 2:
        parser.error(f"--trials: at least 2, got {args.trials}")
    keep_ray_on_loopback()
    os.environ.pop("VISIONTUNE_EXPERIMENT_DIR", None)  # the searcher must open the copies
    print(f"python {sys.version.split()[0]}, ray {version('ray')}, optuna {version('optuna')}, "
          f"torch {version('torch')}, tensorboard {version('tensorboard')}; {os.cpu_count()} "
          f"CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    start = time.perf_counter()
    if args.keep:
        args.keep.mkdir(parents=True)
        rows = measure(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="visiontune-scale-") as scratch:
            rows = measure(args, Path(scratch))
    print_table(rows)
    print(f"\n{args.trials} trials x up to {args.epochs} epochs, width {args.width}, "
          f"{args.images} images; W = {max(1, min(WINDOW, args.trials // 2))}; load average "
          f"{os.getloadavg()[0]:.2f}; benchmark {time.perf_counter() - start:.0f} s"
          + (f"; files in {args.keep}" if args.keep else ""))  # fmt: skip


if __name__ == "__main__":
    main()
