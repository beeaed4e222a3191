"""A driver's whole job as one function (the sweep, then its report), and the same job run on
the head node for a Ray Client address (ray://HOST:PORT), where Ray Tune would run its loop
anyway. Called by `visiontune tune` (visiontune/cli.py)."""

from __future__ import annotations

import sys
import time
from typing import Any

from visiontune.errors import InputError, SweepInterrupted


def sweep_and_report(
    spec: Any, data: Any, experiment: Any, address: str | None, resume: bool, verbose: bool = False
) -> tuple[str, str, str]:
    """A driver's whole job: the sweep, then its report (uploaded next to it for a URI storage).
    Returns the local experiment directory, the report's path and the main table."""
    from visiontune.analysis.report import main_table, write_report
    from visiontune.analysis.results import load_experiment
    from visiontune.sweep import run_sweep

    exp_dir = run_sweep(spec, data, experiment, address, resume=resume, verbose=verbose)
    experiment.download()  # Ray's trial results join the driver's files (no checkpoints)
    out = write_report(exp_dir)
    experiment.upload()
    return str(exp_dir), str(out / "report.md"), main_table(load_experiment(exp_dir))


def sweep_on_head(
    address: str, spec: Any, data: Any, experiment: Any, resume: bool, verbose: bool = False
) -> tuple[str, str, str]:
    """Ray Client (ray://HOST:PORT): Ray Tune runs its loop on the head node then, so the whole
    driver runs there as one task: the Optuna study, ledger, TensorBoard events and report are
    written on the head's disk (a local --storage is a path on the head) or to the URI storage."""
    import ray

    connect_client(address)
    try:
        head = ray.remote(sweep_and_report).options(
            num_cpus=0, max_retries=0, resources={"node:__internal_head__": 0.001}
        )
        return ray.get(head.remote(spec, data, experiment, address, resume, verbose))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, InputError | SweepInterrupted):
            raise exc.cause from None
        raise
    finally:
        ray.shutdown()


def connect_client(address: str, attempts: int = 3) -> None:
    """ray.init over Ray Client. The head's client proxy starts one server process per client
    connection, and that start can fail on a busy head (the proxy then says so and frees the
    port only later): retry on a fresh server instead of giving up on the sweep."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, log_to_driver=True)
            return
        except ConnectionAbortedError as exc:
            if "client server failed" not in str(exc) or attempt == attempts:
                raise
            print(f"visiontune: Ray Client server did not start ({attempt}/{attempts}); retrying",
                  file=sys.stderr)  # fmt: skip
            time.sleep(2)
