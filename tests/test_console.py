"""visiontune/console.py: the sweep's console lines, its progress bar's state and the sweep log.

The callback is driven directly with the calls Tune's controller makes and real (stub) Ray Tune
`Trial` objects, without Ray running; one test runs real tiny sweeps through the command line."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ray.tune.experiment import Trial
from support import CLASSIFIER_SPACE

from visiontune.console import VERBOSE_ENV, ConsoleCallback, set_console_verbosity
from visiontune.layout import EXPERIMENT_DIR_ENV, SWEEP_LOG
from visiontune.spec import load_spec
from visiontune.trainables.contract import divergence_result

EPOCHS = 3
SPEC = load_spec(CLASSIFIER_SPACE, {"max_epochs": EPOCHS, "num_samples": 4})


class TrialWithError(Trial):
    """A real Trial whose traceback file is given: Ray's own comes from a storage context, which
    needs a running Ray."""

    def __init__(self, trial_id: str, error_file: Path) -> None:
        super().__init__("run_trial", config={}, trial_id=trial_id, stub=True)
        self._error_file = str(error_file)

    @property
    def error_file(self) -> str:
        return self._error_file


@pytest.fixture(autouse=True)
def _no_driver_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXPERIMENT_DIR_ENV, raising=False)
    monkeypatch.setenv(VERBOSE_ENV, "")  # recorded, so what a test sets is undone after it
    monkeypatch.delenv(VERBOSE_ENV)


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    path = tmp_path / "storage" / "exp"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The driver's stdout, which the console writes its lines to (not a tty: no bar)."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    return stream


@pytest.fixture
def start(exp: Path, terminal: io.StringIO, monkeypatch: pytest.MonkeyPatch):
    """Starts a console's sweep (setup, then the controller's first step) on `terminal`."""
    started: list[ConsoleCallback] = []

    def _start(callback: ConsoleCallback | None = None, trials: list | None = None):
        monkeypatch.setattr(sys, "stdout", terminal)  # again: pytest sets its own for each phase
        callback = callback or ConsoleCallback(exp, SPEC)
        started.append(_started(callback, trials))
        return callback

    yield _start
    for callback in started:
        callback._log.close()  # the streams are the terminal's again even if a test failed


@pytest.fixture
def console(start):
    return start()


def _started(callback: ConsoleCallback, trials: list | None = None) -> ConsoleCallback:
    callback.setup()
    callback.on_step_begin(iteration=0, trials=trials or [])
    return callback


def _trial(trial_id: str = "t1", config: dict[str, Any] | None = None) -> Trial:
    return Trial("run_trial", config=config or SPEC.seed_config("seed custom"), trial_id=trial_id,
                 stub=True)  # fmt: skip


def _report(console: ConsoleCallback, trial: Trial, epoch: int, val_acc: float) -> None:
    result = {"val_acc": val_acc, "val_loss": 1.0 - val_acc, "epoch": epoch}
    trial.update_last_result({**result, "training_iteration": epoch})
    console.on_trial_result(iteration=0, trials=[trial], trial=trial, result=trial.last_result)


def _lines(terminal: io.StringIO) -> list[str]:
    """The console's lines, without their elapsed-time prefix."""
    out = terminal.getvalue()
    return [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]


# --- the lines --------------------------------------------------------------------------------


def test_a_seed_trial_starts_with_its_name_and_searched_parameters_only(console, terminal):
    trial = _trial(config=SPEC.seed_config("seed baseline"))
    console.on_trial_start(iteration=0, trials=[trial], trial=trial)
    line = _lines(terminal)[-1]
    assert line.startswith("trial t1 started (seed baseline): arch=baseline lr=0.0001 ")
    assert "l2=1e-05" in line and "width=" not in line and "epochs=" not in line


def test_a_sampled_trial_starts_with_its_values_in_four_significant_digits(console, terminal):
    config = {**SPEC.seed_config("seed custom"), "lr": 0.000643123, "rotation": 43.3648}
    trial = _trial("t2", config)
    console.on_trial_start(iteration=0, trials=[trial], trial=trial)
    line = _lines(terminal)[-1]
    assert line.startswith("trial t2 started: arch=custom lr=0.0006431 ")
    assert "rotation=43.36" in line


def test_each_epoch_is_a_line_with_the_metric_and_counts_for_the_bar(console, terminal):
    first, second = _trial("t1"), _trial("t2")
    _report(console, first, 1, 0.25)
    _report(console, second, 1, 0.5)
    _report(console, first, 2, 0.125)
    assert _lines(terminal)[-3:] == [
        "trial t1 epoch 1/3: val_acc=0.25 (best so far)",
        "trial t2 epoch 1/3: val_acc=0.5 (best so far)",
        "trial t1 epoch 2/3: val_acc=0.125",
    ]
    p = console.progress
    assert (p.total, p.done, p.epochs, p.best, p.best_trial) == (4, 0, 3, 0.5, "t2")
    assert p.postfix("val_acc") == "3 epochs, best val_acc 0.5 (t2)"


def test_best_follows_the_objective_of_a_minimised_metric(exp, start, terminal):
    console = start(ConsoleCallback(exp, dataclasses.replace(SPEC, metric="val_loss", mode="min")))
    trial = _trial()
    _report(console, trial, 1, 0.25)  # val_loss 0.75
    _report(console, trial, 2, 0.5)  # val_loss 0.5: better
    _report(console, trial, 3, 0.0)  # val_loss 1.0: worse
    assert (console.progress.best, console.best_of["t1"]) == (0.5, 0.5)
    assert _lines(terminal)[-2:] == ["trial t1 epoch 2/3: val_loss=0.5 (best so far)",
                                   "trial t1 epoch 3/3: val_loss=1"]  # fmt: skip


def test_a_trial_that_trained_its_budget_finished_and_a_shorter_one_was_stopped(console, terminal):
    done, cut = _trial("t1"), _trial("t2")
    for epoch in range(1, EPOCHS + 1):
        _report(console, done, epoch, 0.1 * epoch)
    _report(console, cut, 1, 0.05)
    console.on_trial_complete(iteration=0, trials=[done, cut], trial=done)
    console.on_trial_complete(iteration=0, trials=[done, cut], trial=cut)
    assert _lines(terminal)[-2:] == [
        "trial t1 finished epoch 3/3: best val_acc=0.3",
        "trial t2 stopped by the scheduler after epoch 1/3: best val_acc=0.05",
    ]
    assert console.progress.done == 2
    assert dict(console.ended) == {"finished": 1, "stopped": 1}


def test_a_diverged_trial_is_an_error_with_its_reason_and_not_an_epoch(console, terminal):
    trial = _trial()
    _report(console, trial, 1, 0.25)
    diverged = divergence_result(("val_acc", "val_loss"), FloatingPointError("train_loss is nan"))
    trial.update_last_result({**diverged, "training_iteration": 2})
    console.on_trial_result(iteration=0, trials=[trial], trial=trial, result=trial.last_result)
    console.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    assert _lines(terminal)[-2:] == [
        "trial t1 epoch 1/3: val_acc=0.25 (best so far)",
        "trial t1 errored in epoch 2: FloatingPointError: train_loss is nan",
    ]
    assert (console.progress.epochs, console.progress.done, console.ended["errored"]) == (1, 1, 1)


def test_an_errored_trial_shows_the_last_line_of_its_traceback(console, terminal, tmp_path):
    error = tmp_path / "error.txt"
    error.write_text(
        "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n"
    )
    trial = TrialWithError("t1", error)
    console.on_trial_error(iteration=0, trials=[trial], trial=trial)
    assert _lines(terminal)[-1] == "trial t1 errored in epoch 1: RuntimeError: CUDA out of memory"
    assert console.progress.done == 1


def test_a_retried_trial_says_where_it_failed_and_resumes(console, terminal, tmp_path):
    trial = TrialWithError("t1", tmp_path / "no-such-file")
    console.on_trial_start(iteration=0, trials=[trial], trial=trial)
    _report(console, trial, 1, 0.25)
    console.on_trial_recover(iteration=0, trials=[trial], trial=trial)
    console.on_trial_start(iteration=0, trials=[trial], trial=trial)
    assert _lines(terminal)[-2:] == [
        "trial t1 failed in epoch 2: unknown error; retrying from its last checkpoint",
        "trial t1 resumed after epoch 1",
    ]
    assert console.progress.done == 0


def test_the_end_of_the_sweep_sums_it_up(console, terminal):
    trial = _trial()
    for epoch in range(1, EPOCHS + 1):
        _report(console, trial, epoch, 0.2)
    console.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    console.on_experiment_end(trials=[trial])
    assert _lines(terminal)[-1] == (
        "sweep ended: 1/4 trials (1 finished, 0 stopped, 0 errored), 3 epochs; "
        "best val_acc 0.2 (trial t1)"
    )


# --- the bar ----------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A terminal that records what is drawn on it."""

    def isatty(self) -> bool:
        return True


def test_the_bar_shows_trials_done_epochs_and_the_best_score(exp, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    console = _started(ConsoleCallback(exp, SPEC))
    trial = _trial()
    for epoch in range(1, EPOCHS + 1):
        _report(console, trial, epoch, 0.1 * epoch)
    console.on_trial_complete(iteration=0, trials=[trial], trial=trial)
    console.on_experiment_end(trials=[trial])
    frames = terminal.getvalue().split("\r")
    assert any(f.startswith("0/4 trials |") for f in frames)
    last = next(f for f in reversed(frames) if " trials |" in f).split("\n")[0]
    assert last.startswith("1/4 trials |") and last.endswith(", 3 epochs, best val_acc 0.3 (t1)")


def test_no_bar_is_drawn_when_the_output_is_not_a_terminal(console, terminal):
    _report(console, _trial(), 1, 0.25)
    assert "trials |" not in terminal.getvalue()


# --- the log ----------------------------------------------------------------------------------


def test_ray_output_during_the_sweep_goes_to_the_log_and_not_the_terminal(exp, capsys):
    ray_logger = logging.getLogger("visiontune.test.ray")
    handler = logging.StreamHandler(sys.stderr)  # made before the sweep, as Ray's driver handler
    ray_logger.addHandler(handler)
    try:
        console = _started(ConsoleCallback(exp, SPEC))
        print("│ Trial run_trial_t1 config │")
        ray_logger.warning("a Ray warning")
        console.on_experiment_end(trials=[])
        print("after the sweep")
    finally:
        ray_logger.removeHandler(handler)
    out, err = capsys.readouterr()
    assert "Trial run_trial_t1" not in out and "a Ray warning" not in err
    assert "after the sweep" in out and handler.stream is sys.stderr
    log = (exp / SWEEP_LOG).read_text()
    assert "│ Trial run_trial_t1 config │\n" in log and "a Ray warning\n" in log
    assert "] sweep exp: 4 trials of up to 3 epochs; full log: " in log
    assert "] sweep ended: 0/4 trials" in log and "after the sweep" not in log


def test_with_verbose_ray_output_reaches_the_terminal_and_the_log(exp, capsys):
    set_console_verbosity(True)
    console = _started(ConsoleCallback(exp, SPEC))
    print("│ Trial run_trial_t1 config │")
    console.on_experiment_end(trials=[])
    assert "│ Trial run_trial_t1 config │" in capsys.readouterr().out
    assert "│ Trial run_trial_t1 config │" in (exp / SWEEP_LOG).read_text()


def test_an_exception_that_ends_the_driver_mid_sweep_is_shown_on_the_terminal(exp, capsys):
    console = _started(ConsoleCallback(exp, SPEC))
    try:
        sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
        assert sys.stdout is not console._log.tees[0] and sys.stderr is not console._log.tees[1]
    finally:
        console._log.close()
    assert "KeyboardInterrupt" in capsys.readouterr().err


def test_a_resumed_sweep_appends_to_the_log_and_counts_what_its_trials_did(exp, start, terminal):
    callback = ConsoleCallback(exp, SPEC)
    restored = pickle.loads(pickle.dumps(callback))  # what Tuner.restore hands the controller
    first = start(callback)
    first.on_experiment_end(trials=[])
    done, paused = _trial("t1"), _trial("t2")
    done.update_last_result({"val_acc": 0.5, "epoch": 3, "training_iteration": 3})
    done.set_status(Trial.TERMINATED)
    paused.update_last_result({"val_acc": 0.25, "epoch": 1, "training_iteration": 1})
    second = start(restored, trials=[done, paused])
    second.on_trial_start(iteration=0, trials=[done, paused], trial=paused)
    second.on_experiment_end(trials=[done, paused])
    p = second.progress
    assert (p.done, p.epochs, p.best, p.best_trial) == (1, 4, 0.5, "t1")
    assert "trial t2 resumed after epoch 1" in _lines(terminal)
    assert (exp / SWEEP_LOG).read_text().count("visiontune tune: a driver run of") == 2


def test_a_restored_console_follows_this_driver_runs_verbose_flag(exp, start):
    restored = pickle.loads(pickle.dumps(ConsoleCallback(exp, SPEC, verbose=False)))
    set_console_verbosity(True)
    console = start(restored)
    console.on_experiment_end(trials=[])
    assert console.verbose


# --- a real sweep -------------------------------------------------------------------------------


def _tune(tmp_path: Path, data: Path, name: str, *args: Any) -> subprocess.CompletedProcess:
    """`visiontune tune` as a user runs it, in an environment without Ray settings of ours that an
    in-process test of the command line may have left in this process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_DEDUP_LOGS_SKIP_REGEX",
                                                            VERBOSE_ENV)}  # fmt: skip
    command = [
        Path(sys.executable).with_name("visiontune"), "tune", CLASSIFIER_SPACE,
        "--storage", tmp_path / "runs", "--name", name, "--data", data, "--set", "width=4", *args,
    ]  # fmt: skip
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=env)  # fmt: skip


@pytest.mark.ray  # two tiny sweeps on a local Ray
def test_a_sweep_prints_one_line_per_event_and_logs_everything(tmp_path, tiny_imagefolder):
    run = _tune(tmp_path, tiny_imagefolder, "quiet", "--num-samples", 3, "--max-epochs", 2)
    assert run.returncode == 0, run.stderr[-3000:]
    out, both = run.stdout, run.stdout + run.stderr
    assert " started (seed baseline): arch=baseline lr=0.0001 " in out
    assert " epoch 1/2: val_acc=" in out and " epoch 2/2: val_acc=" in out
    assert " finished epoch 2/2: best val_acc=" in out or " stopped by the scheduler " in out
    assert "] sweep ended: 3/3 trials (" in out
    assert "Checkpoint successfully created" not in both
    assert "╭" not in both and "Trial status:" not in both  # Ray's boxed tables
    log = (tmp_path / "runs" / "quiet" / SWEEP_LOG).read_text()
    assert " started (seed baseline): " in log and "] sweep ended: 3/3 trials (" in log
    assert "Trial status:" in log  # Ray's own output, kept in the log
    # and the driver's output before and after Tune runs: the whole command is in the log
    assert log.index("live curves: tensorboard --logdir") < log.index(" started (seed baseline): ")
    assert "live curves: tensorboard --logdir" in out
    assert log.index("] sweep ended: ") < log.index("Test split: evaluated seed baseline")

    loud = _tune(tmp_path, tiny_imagefolder, "loud", "--num-samples", 1, "--max-epochs", 1,
                 "--verbose")  # fmt: skip
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "╭" in loud.stdout and "Trial status:" in loud.stdout
    assert "Checkpoint successfully created" in loud.stdout + loud.stderr
    assert " started (seed baseline): " in loud.stdout
    assert "Trial status:" in (tmp_path / "runs" / "loud" / SWEEP_LOG).read_text()
