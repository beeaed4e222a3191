"""What `visiontune tune` shows while a sweep runs, and the sweep's log file.

    visiontune tune SPACE.yaml             # one line per trial event, and a progress bar
    visiontune tune SPACE.yaml --verbose   # Ray Tune's own output too

Ray Tune 2.60 prints a boxed table for every trial's config and result and a status table every
30 s, and each worker logs "Checkpoint successfully created" every epoch: the few events a user
follows (a trial started, reached an epoch, was stopped, failed) were buried. `ConsoleCallback`
prints those as single lines under a tqdm bar (trials done, epochs, elapsed, ETA, the best score
so far as `visiontune.best.Objective` defines it; drawn on a terminal only).

Nothing is lost: while Tune runs the sweep (`setup` to `on_experiment_end`), what the driver
writes to sys.stdout/sys.stderr and its logging handlers (Ray's driver output, the worker output
Ray prints for the driver) goes to STORAGE/NAME/sweep.log with these lines (appended on --resume),
and to the terminal only with --verbose. Ray keeps its default verbosity, so the log holds its
tables. Only the checkpoint lines are dropped before the driver prints them
(`visiontune.sweep.compat.hide_checkpoint_lines`): Ray prints the last ones after the sweep ends.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from tqdm import tqdm

from visiontune.layout import SWEEP_LOG, current_experiment_dir
from visiontune.spec import SweepSpec
from visiontune.trainables.contract import diverged_reason

# This driver run's --verbose. A resumed sweep's callbacks are unpickled as they were when the
# sweep started (Tuner.restore takes no new RunConfig), so the flag reaches them this way.
VERBOSE_ENV = "VISIONTUNE_VERBOSE"
BAR_FORMAT = "{n_fmt}/{total_fmt} trials |{bar}| {elapsed}<{remaining}{postfix}"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the worker prefixes; the log is plain text


def set_console_verbosity(verbose: bool) -> None:
    """Record this driver run's --verbose for the sweep's ConsoleCallback, restored ones too."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass
class Progress:
    """What the bar shows besides time: trials ended of all, epochs trained, the best score."""

    total: int
    done: int = 0
    epochs: int = 0
    best: float | None = None
    best_trial: str | None = None

    def postfix(self, metric: str) -> str:
        best = "-" if self.best is None else f"{_fmt(self.best)} ({self.best_trial})"
        return f"{self.epochs} epochs, best {metric} {best}"


class _Tee(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr: text goes to the log, and to the stream it replaced
    when `echo` (--verbose) or once the log is closed (a handler may keep the Tee after)."""

    def __init__(self, stream: TextIO, log: SweepLog) -> None:
        self.stream, self.log = stream, log

    @property
    def encoding(self) -> str:  # Ray picks its table characters by the stream's encoding
        return getattr(self.stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if not self.log.write(text) or self.log.echo:
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        try:
            return self.log.echo and self.stream.isatty()
        except ValueError:  # the stream it replaced was closed since (asked at exit)
            return False


class SweepLog:
    """The log file, and the driver's output routed into it while it is open. Written by the
    driver's main thread and by Ray's log-printing thread, hence the lock."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path, self.echo = path, echo
        self.file = path.open("a", encoding="utf-8")
        self.lock = threading.Lock()
        self.terminal = sys.stdout
        self.saved = (sys.stdout, sys.stderr, sys.excepthook)
        self.tees = (_Tee(sys.stdout, self), _Tee(sys.stderr, self))
        self.handlers = [(h, h.setStream(tee)) for h, tee in self._terminal_handlers()]
        sys.stdout, sys.stderr = self.tees
        sys.excepthook = self._excepthook

    def _terminal_handlers(self) -> list[tuple[logging.StreamHandler, _Tee]]:
        """Logging handlers that write to the terminal, with the Tee each should write to. Ray's
        driver handler (ray._private.log.PlainRayHandler, ray 2.60.0) and Optuna's keep the
        sys.stderr they were made with: replacing sys.stderr alone misses Ray's warnings."""
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        found = []
        for handler in (h for lg in loggers for h in getattr(lg, "handlers", ())):
            if not isinstance(handler, logging.StreamHandler) or isinstance(
                getattr(type(handler), "stream", None), property
            ):
                continue  # not a stream, or follows sys.stderr by itself (logging._StderrHandler)
            found += [(handler, t) for t in self.tees if handler.stream is t.stream]
        return found

    def write(self, text: str) -> bool:
        """Append `text`; False once the log is closed."""
        with self.lock:
            if self.file.closed:
                return False
            self.file.write(_ANSI.sub("", text))
            self.file.flush()  # current on disk if the driver is killed
            return True

    def _excepthook(self, *exc_info: Any) -> None:
        """An exception that ends the driver before Tune's cleanup (a second Ctrl-C) is shown on
        the terminal, not only written to the log."""
        self.restore()
        self.saved[2](*exc_info)

    def restore(self) -> None:
        for handler, stream in self.handlers:
            if handler.stream in self.tees:
                handler.setStream(stream)
        if sys.stdout is self.tees[0]:
            sys.stdout = self.saved[0]
        if sys.stderr is self.tees[1]:
            sys.stderr = self.saved[1]
        if sys.excepthook == self._excepthook:
            sys.excepthook = self.saved[2]

    def close(self) -> None:
        self.restore()
        with self.lock:
            self.file.close()


class ConsoleCallback(Callback):
    """The sweep's console and log (see the module docstring). Pickled with the Tuner before the
    sweep starts: the log, the bar and what was seen this driver run exist from `setup` on."""

    def __init__(self, experiment_dir: str | Path, spec: SweepSpec, verbose: bool = False) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.spec = spec
        self.objective = spec.objective
        self.verbose = verbose
        self.progress = Progress(spec.num_samples)
        self.epoch_of: dict[str, int] = {}  # trial id -> the last epoch it reported
        self.best_of: dict[str, Any] = {}  # trial id -> its best score
        self.ended: Counter[str] = Counter()  # finished / stopped / errored

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def setup(self, **info: Any) -> None:
        self.experiment_dir = current_experiment_dir(self.experiment_dir)
        self.verbose = os.environ.get(VERBOSE_ENV, "1" if self.verbose else "0") == "1"
        self._started, self._refreshed = time.monotonic(), 0.0
        self._seen: set[str] = set()
        self._bar: tqdm | None = None
        self._log = SweepLog(self.experiment_dir / SWEEP_LOG, echo=self.verbose)
        self._log.write(f"=== {datetime.now():%Y-%m-%d %H:%M:%S} visiontune tune: a driver run "
                        f"of {self.experiment_dir} ===\n")  # fmt: skip
        self._say(f"sweep {self.experiment_dir.name}: {self.progress.total} trials of up to "
                  f"{self.spec.epochs} epochs; full log: {self._log.path}")  # fmt: skip

    def _say(self, text: str) -> None:
        line = f"[{tqdm.format_interval(time.monotonic() - self._started)}] {text}"
        self._log.write(line + "\n")
        tqdm.write(line, file=self._log.terminal)  # above the bar, which is drawn again below
        self._log.terminal.flush()

    def _update_bar(self, ended: int = 0) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self.progress.postfix(self.objective.metric), refresh=False)
            self._bar.update(ended)
            self._bar.refresh()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._bar is not None:
            return
        for trial in trials:  # a resumed sweep: what the trials Ray restored have done
            self._note_restored(trial)
        terminal = self._log.terminal
        self._bar = tqdm(
            total=self.progress.total, initial=self.progress.done, file=terminal,
            bar_format=BAR_FORMAT, dynamic_ncols=True,
            disable=self.verbose or not terminal.isatty(),  # Ray prints freely with --verbose
        )  # fmt: skip
        self._update_bar()

    def _note_restored(self, trial: Any) -> None:
        last = trial.last_result or {}
        if "training_iteration" not in last:
            return
        self.epoch_of[trial.trial_id] = int(last.get("epoch", last["training_iteration"]))
        self.progress.epochs += int(last["training_iteration"])
        extremes = trial.metric_analysis.get(self.objective.metric, {})  # Ray's per-trial max/min
        self._score(trial.trial_id, extremes.get(self.objective.mode))
        if trial.status in ("TERMINATED", "ERROR"):
            self.progress.done += 1

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._bar is not None and time.monotonic() - self._refreshed >= 1.0:
            self._refreshed = time.monotonic()
            self._bar.refresh()  # elapsed time and ETA move between events too

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial_id = trial.trial_id
        if trial_id in self._seen or trial_id in self.epoch_of:  # HyperBand, a retry, --resume
            self._say(f"trial {trial_id} resumed after epoch {self.epoch_of.get(trial_id, 0)}")
        else:
            seed = self.spec.seed_name(trial.config)
            params = " ".join(f"{k}={_fmt(trial.config.get(k))}" for k in self.spec.search)
            self._say(f"trial {trial_id} started{f' ({seed})' if seed else ''}: {params}")
        self._seen.add(trial_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if diverged_reason(result):
            return  # measured nothing: on_trial_complete reports the error
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        self.epoch_of[trial.trial_id] = epoch
        self.progress.epochs += 1
        value = result.get(self.objective.metric)
        best = " (best so far)" if self._score(trial.trial_id, value) else ""
        self._say(f"trial {trial.trial_id} epoch {epoch}/{self.spec.epochs}: "
                  f"{self.objective.metric}={_fmt(value)}{best}")  # fmt: skip
        self._update_bar()

    def _score(self, trial_id: str, value: Any) -> bool:
        """Record a score of `trial_id`; whether it is the sweep's best so far."""
        if self.objective.better(value, self.best_of.get(trial_id)):
            self.best_of[trial_id] = value
        if not self.objective.better(value, self.progress.best):
            return False
        self.progress.best, self.progress.best_trial = float(value), trial_id
        return True

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epoch = self.epoch_of.get(trial.trial_id, 0)
        reason = diverged_reason(trial.last_result)
        if reason:  # ended by its own last report (trainables/tune_edge.py)
            self._end(trial, "errored", f"errored in epoch {epoch + 1}: {reason}")
            return
        best = f"best {self.objective.metric}={_fmt(self.best_of.get(trial.trial_id))}"
        if epoch >= self.spec.epochs:
            self._end(trial, "finished", f"finished epoch {epoch}/{self.spec.epochs}: {best}")
        else:
            self._end(trial, "stopped", f"stopped by the scheduler after epoch {epoch}/"
                      f"{self.spec.epochs}: {best}")  # fmt: skip

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "errored", f"errored in epoch {self._failed_in(trial)}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(f"trial {trial.trial_id} failed in epoch {self._failed_in(trial)}; retrying "
                  "from its last checkpoint")  # fmt: skip

    def _failed_in(self, trial: Any) -> str:
        """The epoch a trial failed in, and the last line of the traceback Ray wrote for it."""
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).exists() else ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = lines[-1] if lines else "unknown error"
        return f"{self.epoch_of.get(trial.trial_id, 0) + 1}: {reason}"

    def _end(self, trial: Any, kind: str, text: str) -> None:
        self.ended[kind] += 1
        self.progress.done += 1
        self._say(f"trial {trial.trial_id} {text}")
        self._update_bar(ended=1)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        p, metric = self.progress, self.objective.metric
        best = "none" if p.best is None else f"{_fmt(p.best)} (trial {p.best_trial})"
        counts = ", ".join(f"{self.ended[k]} {k}" for k in ("finished", "stopped", "errored"))
        if self._bar is not None:
            self._bar.close()  # its last state stays on the terminal, above the summary
        self._say(f"sweep ended: {p.done}/{p.total} trials ({counts}), {p.epochs} epochs; "
                  f"best {metric} {best}")  # fmt: skip
        self._log.close()
