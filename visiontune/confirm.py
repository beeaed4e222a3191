"""Confirm a finished sweep: train its seed configurations and its top-k tuned configurations
again with several training seeds each, and test every run.

    visiontune confirm runs/classifier                      # top 3 configurations, seeds 0-4
    visiontune confirm runs/classifier --top-k 1 --seeds 2  # the smallest confirmation
    visiontune report runs/classifier                       # mean ± std, 95% CI, Welch's t-test

What runs: each seed point of the spec (roles "seed baseline", "seed custom", ...) and the
sweep's K best trials in the report's ranking (visiontune/best.py; roles "tuned #1".."tuned #K";
a trial whose configuration is a seed point's or an earlier pick's is passed over for the next,
an errored one too), each with its `seed` (every task's weight-init, shuffling and augmentation
seed) set to 0..S-1, at the sweep's full epoch budget (`fixed.epochs`: a trial ASHA stopped
early trains all of it here). Seed 0 is the sweep's own, so that run repeats the sweep's trial.

How: one Ray Tune run in EXP/confirm/, inside the experiment (trial directories, checkpoints,
TensorBoard events, log and ledger; for a URI storage, in the bucket beside the sweep), with the
sweep's trainable (trainables/tune_edge.run_trial), its resources per run and as many runs at
once as it had slots. The (configuration, seed) grid is an explicit list of points through Ray's
BasicVariantGenerator: no searcher, no scheduler (FIFO: every run trains every epoch).
Checkpoint retention and retries (max_failures) are the sweep's.

Which checkpoint is tested: each run's best validation epoch by the sweep's objective (the
checkpoint Ray keeps; ties to the later epoch), on the test split, as Ray tasks with a run's
resources (visiontune.sweep.evaluation). It is the sweep's own rule, so a confirmed row is the
sweep's row with more seeds, and it chooses on the validation split only, so the test numbers
stay unbiased. The last epoch would be the same checkpoint wherever a run still improves at
the end of its budget, and a worse one where it overfits.

Resumable: the plan (configurations, seeds) is saved in EXP/confirm/plan.json before the first
run; the same command again continues an interrupted confirmation from each run's last
checkpoint (errored runs are retried from theirs), and once confirm.json is written it trains
nothing. Another --top-k or --seeds than the saved plan's is refused.

EXP/confirm.json: one row per run: role, trial_id (the sweep trial the configuration came from),
seed, run_id (the confirmation's Ray trial: its directory is EXP/confirm/trial_<run_id>), epoch
(the tested checkpoint's), the task's METRICS at that epoch and its test metrics; a run that
errored or diverged has `error` instead. analysis/confirmation.py turns it into the report's
mean ± std tables, picks the tuned best again by its mean validation score and tests it
against each seed configuration.

Ray is imported inside the functions: the CLI keeps Ray on loopback before it loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from visiontune.errors import InputError, SweepInterrupted
from visiontune.fileio import read_json_file, write_json
from visiontune.layout import (
    CONFIRM_DIR,
    CONFIRM_FILE,
    CONFIRM_PLAN_FILE,
    EXPERIMENT_DIR_ENV,
    SPEC_FILE,
)
from visiontune.spec import SweepSpec
from visiontune.storage import Experiment, is_uri, open_experiment
from visiontune.sweep.ledger import sweep_finished

SEED_KEY = "seed"  # every task's Config: weight init, shuffling and augmentation draws
ROLE_KEY = "role"  # the HParams tab's name for a run's configuration ("seed baseline", "tuned #1")
DEFAULT_TOP_K, DEFAULT_SEEDS = 3, 5


@dataclass(frozen=True)
class Candidate:
    """A configuration to confirm: its role in the report, the sweep trial it came from (None
    for a seed point the sweep has no trial of) and its complete config without the seed."""

    role: str
    trial_id: str | None
    config: dict[str, Any]


def check_request(top_k: int, seeds: int) -> None:
    if top_k < 1:
        raise InputError(f"--top-k: must be >= 1 (tuned configurations to confirm), got {top_k}")
    if seeds < 2:
        raise InputError(f"--seeds: must be >= 2 (a spread needs two runs), got {seeds}")


def open_sweep(location: str) -> Experiment:
    """The finished sweep at `location` (STORAGE/NAME or a URI), its files on this machine
    (a URI's in a fresh mirror); InputError when it is no experiment or has not finished."""
    if is_uri(location):
        parts = urlsplit(location)
        path = parts.path.rstrip("/")
        parent = urlunsplit((parts.scheme, parts.netloc, path.rsplit("/", 1)[0], parts.query, ""))
        experiment = open_experiment(parent, path.rsplit("/", 1)[-1], "EXP")
        if not experiment.exists():
            raise InputError(f"{location}: not a visiontune experiment (no {SPEC_FILE})")
        experiment.mirror()
    else:
        path = Path(location).expanduser().resolve()
        experiment = Experiment(name=path.name, local=path)
    if not (experiment.local / SPEC_FILE).is_file():
        raise InputError(f"{location}: not a visiontune experiment directory (no {SPEC_FILE})")
    if not sweep_finished(experiment.local):
        raise InputError(
            f"{location}: the sweep has not finished (`visiontune tune ... --resume` continues "
            "it); a confirmation needs its finished trials"
        )
    return experiment


def confirm_experiment(experiment: Experiment) -> Experiment:
    """The confirmation's own Ray experiment, EXP/confirm (STORAGE/NAME/confirm for a URI)."""
    local = experiment.local / CONFIRM_DIR
    if not experiment.uri:
        return Experiment(name=CONFIRM_DIR, local=local)
    bare, _, query = experiment.uri.partition("?")
    return Experiment(
        name=CONFIRM_DIR,
        local=local,
        uri=f"{bare}/{CONFIRM_DIR}" + (f"?{query}" if query else ""),
        filesystem=experiment.filesystem,
        fs_path=experiment.remote_dir,
    )


def _trial_config(exp_dir: Path, trial: dict[str, Any], spec: SweepSpec) -> dict[str, Any]:
    """A sweep trial's config (params.json) at the full epoch budget, without its seed."""
    params = read_json_file(exp_dir / trial["dir"] / "params.json", dict, {})
    config = {k: v for k, v in params.items() if k != SEED_KEY}
    return {**config, "epochs": spec.epochs}


def pick_candidates(sweep: Any, top_k: int) -> list[Candidate]:
    """The seed points (their sweep trials' configs), then the top_k best-ranked tuned trials
    of the sweep (`sweep`: analysis.results.Experiment, trials in the report's order)."""
    spec = sweep.spec
    trials = sweep.trials.to_dict("records")
    picked: list[Candidate] = []
    for name in spec.seeds:
        trial = next((t for t in trials if t["seed"] == name and t["status"] != "ERROR"), None)
        if trial is None:
            config = {k: v for k, v in spec.seed_config(name).items() if k != SEED_KEY}
            picked.append(Candidate(name, None, config))
        else:
            picked.append(
                Candidate(name, trial["trial_id"], _trial_config(sweep.path, trial, spec))
            )
    tuned = 0
    for trial in trials:
        if tuned == top_k:
            break
        score = trial.get(spec.metric)
        if trial["seed"] or trial["status"] == "ERROR" or score is None or score != score:
            continue  # a seed point, errored, or never scored (NaN)
        config = _trial_config(sweep.path, trial, spec)
        if any(config == c.config for c in picked):
            continue
        tuned += 1
        picked.append(Candidate(f"tuned #{tuned}", trial["trial_id"], config))
    if tuned == 0:
        raise InputError(
            f"{sweep.path}: no tuned trial besides the seed points has a {spec.metric}: "
            "nothing to confirm"
        )
    return picked


def make_plan(candidates: list[Candidate], top_k: int, seeds: int) -> dict[str, Any]:
    """What a confirmation trains, as saved in EXP/confirm/plan.json (JSON-ready)."""
    return {
        "top_k": top_k,
        "seeds": list(range(seeds)),
        "candidates": [dataclasses.asdict(c) for c in candidates],
    }


def run_points(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (configuration, seed) run of the plan as a complete trial config."""
    return [
        {**candidate["config"], SEED_KEY: seed}
        for candidate in plan["candidates"]
        for seed in plan["seeds"]
    ]


def config_key(config: dict[str, Any]) -> str:
    """A configuration's identity without its training seed."""
    return json.dumps({k: v for k, v in config.items() if k != SEED_KEY}, sort_keys=True)


def check_saved_plan(confirm_dir: Path, plan: dict[str, Any], location: str) -> bool:
    """Whether a confirmation with this plan was started before; InputError if one with
    another plan was."""
    saved = read_json_file(confirm_dir / CONFIRM_PLAN_FILE, dict, None)
    if saved is None:
        return False
    if saved != plan:
        roles = [c.get("role") for c in saved.get("candidates", []) if isinstance(c, dict)]
        raise InputError(
            f"{location}: holds a confirmation of {roles} with --top-k {saved.get('top_k')} "
            f"--seeds {len(saved.get('seeds', []))}; run that one again to continue it, or "
            f"remove {confirm_dir} and {confirm_dir.parent / CONFIRM_FILE} for a new one"
        )
    return True


# --- the Ray run ------------------------------------------------------------------------------


def _console_spec(spec: SweepSpec, plan: dict[str, Any]) -> SweepSpec:
    """The spec as the confirmation's console sees it: one "trial" per run, and the seed shown
    as the parameter that varies."""
    from visiontune.spec_file import Choice

    seeds = Choice(distribution="choice", values=list(plan["seeds"]))
    return dataclasses.replace(
        spec,
        num_samples=len(run_points(plan)),
        fixed={k: v for k, v in spec.fixed.items() if k != SEED_KEY},
        search={**{k: v for k, v in spec.search.items() if k != SEED_KEY}, SEED_KEY: seeds},
    )


@dataclass(frozen=True)
class RoleSessions:
    """A confirmation run's HParams session: grouped by its configuration's role, so the tab
    shows one row per configuration aggregated over its training seeds (each run stays its own
    run, EXP/confirm/trial_<id>, in the Scalars tab); it records the configuration and its role,
    not the seed, which varies inside the group."""

    roles: dict[str, str]  # config_key -> role

    def __call__(self, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        role = self.roles.get(config_key(config), "?")
        return role, {**{k: v for k, v in config.items() if k != SEED_KEY}, ROLE_KEY: role}


def _tensorboard_view(spec: SweepSpec, plan: dict[str, Any]) -> Any:
    """The HParams tab of EXP/confirm: the searched parameters and the role (one value per
    configuration) declared, sessions grouped by role."""
    from visiontune.spec_file import Choice
    from visiontune.sweep.tuner import TensorBoardView

    roles = {config_key(c["config"]): c["role"] for c in plan["candidates"]}
    declared = Choice(distribution="choice", values=[c["role"] for c in plan["candidates"]])
    return TensorBoardView(
        fixed={k: v for k, v in spec.fixed.items() if k != SEED_KEY},
        search={**{k: v for k, v in spec.search.items() if k != SEED_KEY}, ROLE_KEY: declared},
        session_of=RoleSessions(roles),
    )


def _run_config(spec: SweepSpec, plan: dict[str, Any], sub: Experiment, verbose: bool) -> Any:
    """The sweep's loggers, ledger, console, checkpoint retention and retries, in EXP/confirm."""
    from visiontune.sweep.tuner import run_config

    return run_config(spec, sub, verbose, _console_spec(spec, plan), _tensorboard_view(spec, plan))


def build_confirm_tuner(
    spec: SweepSpec, data: Any, plan: dict[str, Any], sub: Experiment, slots: int, verbose: bool
) -> Any:
    """A Tuner over exactly the plan's runs: each point is one trial, nothing is sampled."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from visiontune.console import set_console_verbosity
    from visiontune.sweep.compat import use_own_tune_loggers
    from visiontune.sweep.tuner import wrapped_trainable

    use_own_tune_loggers()
    set_console_verbosity(verbose)
    points = run_points(plan)
    # Ray accepts a preset point's keys only where the param_space has them; None is no domain
    keys = {key: None for point in points for key in point}
    return tune.Tuner(
        wrapped_trainable(spec, data),
        param_space=keys,
        tune_config=tune.TuneConfig(
            # the generator's own limit: Ray ignores max_concurrent_trials for a generator
            search_alg=BasicVariantGenerator(
                points_to_evaluate=points, max_concurrent=spec.max_concurrent or slots
            ),
            num_samples=len(points),
            reuse_actors=True,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=_run_config(spec, plan, sub, verbose),
    )


def restore_confirm_tuner(spec: SweepSpec, data: Any, sub: Experiment, verbose: bool) -> Any:
    """Continue an interrupted confirmation: finished runs stay, unfinished and errored ones
    continue from their last checkpoints."""
    from ray import tune

    from visiontune.console import set_console_verbosity
    from visiontune.sweep.compat import use_own_tune_loggers
    from visiontune.sweep.tuner import wrapped_trainable

    use_own_tune_loggers()
    set_console_verbosity(verbose)
    return tune.Tuner.restore(
        sub.ray_experiment_path,
        trainable=wrapped_trainable(spec, data),
        resume_unfinished=True,
        resume_errored=True,
        restart_errored=False,
        storage_filesystem=sub.filesystem,
    )


def train_runs(
    spec: SweepSpec,
    data: Any,
    plan: dict[str, Any],
    sub: Experiment,
    address: str | None,
    verbose: bool,
) -> list[dict[str, Any]]:
    """Train (or continue) the plan's runs on Ray and test each; confirm.json's rows."""
    import ray
    from ray import tune

    from visiontune.sweep.cluster import check_shared_storage, cluster_slots, start_ray
    from visiontune.sweep.ledger import saved_trial_states

    started_ray = start_ray(address)
    try:
        slots = cluster_slots(spec)
        check_shared_storage(sub)
        sub.local.mkdir(parents=True, exist_ok=True)
        write_json(sub.local / CONFIRM_PLAN_FILE, plan)
        os.environ[EXPERIMENT_DIR_ENV] = str(sub.local)  # for the callbacks, restored ones too
        if tune.Tuner.can_restore(sub.ray_experiment_path, storage_filesystem=sub.filesystem):
            tuner = restore_confirm_tuner(spec, data, sub, verbose)
        else:
            tuner = build_confirm_tuner(spec, data, plan, sub, slots, verbose)
        sub.upload()
        results = tuner.fit()
        total = len(run_points(plan))
        started, unfinished = saved_trial_states(sub)
        if unfinished or started < total:
            sub.upload()
            raise SweepInterrupted(
                f"{len(unfinished)} run(s) unfinished, {started} of {total} started"
            )
        rows = evaluate_runs(spec, data, results, plan)
        sub.upload()
        return rows
    finally:
        if started_ray:
            ray.shutdown()


def evaluate_runs(
    spec: SweepSpec, data: Any, results: Any, plan: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each run's best-validation checkpoint (the sweep's rule) evaluated on the test split as
    Ray tasks with a run's resources; one row per run, in the plan's order."""
    import ray

    from visiontune.sweep.evaluation import (
        best_checkpoint,
        evaluate_on_test_split,
        trial_id_of,
        trial_sized_task,
    )
    from visiontune.sweep.ledger import error_line
    from visiontune.trainables import load_task
    from visiontune.trainables.contract import diverged_reason

    metrics = [m for m in load_task(spec.task).METRICS if m != "epoch"]
    by_config = {config_key(c["config"]): c for c in plan["candidates"]}
    remote = trial_sized_task(evaluate_on_test_split, spec.cpus_per_trial, spec.gpus_per_trial)
    data_ref = ray.put(data)
    rows, futures = [], []
    for result in results:
        candidate = by_config[config_key(result.config)]
        row: dict[str, Any] = {
            "role": candidate["role"],
            "trial_id": candidate["trial_id"],
            "seed": result.config[SEED_KEY],
            "run_id": trial_id_of(result),
        }
        reason = diverged_reason(result.metrics)
        if reason is None and result.error is not None:
            reason = error_line(result.error)
        pick = None if reason else best_checkpoint(result, spec.objective)
        if pick is None:
            rows.append({**row, "error": reason or "no scored checkpoint"})
            continue
        row["epoch"] = pick[1].get("epoch")
        row.update({key: pick[1].get(key) for key in metrics})
        rows.append(row)
        futures.append((row, remote.remote(spec.task, pick[0], data_ref)))
    for row, test in zip(
        [row for row, _ in futures], ray.get([f for _, f in futures]), strict=True
    ):
        row.update(test)
    order = {c["role"]: i for i, c in enumerate(plan["candidates"])}
    return sorted(rows, key=lambda row: (order[row["role"]], row["seed"]))


# --- the command ------------------------------------------------------------------------------


def confirm_command(
    location: str,
    top_k: int = DEFAULT_TOP_K,
    seeds: int = DEFAULT_SEEDS,
    address: str | None = None,
    verbose: bool = False,
) -> int:
    """`visiontune confirm`: everything is checked before anything is written; returns the
    exit code (0 done, 130 interrupted; bad input raises InputError)."""
    from visiontune.analysis.results import load_experiment
    from visiontune.data import load_dataset
    from visiontune.trainables import load_task

    check_request(top_k, seeds)
    if address and address.startswith("ray://"):
        raise InputError(
            "--address: confirm does not run over Ray Client (ray://); run it on the head "
            "node with --address auto"
        )
    experiment = open_sweep(location)
    sweep = load_experiment(experiment.local)
    spec = sweep.spec
    if SEED_KEY not in load_task(spec.task).Config.model_fields:
        raise InputError(f"{location}: task {spec.task} has no `{SEED_KEY}` parameter to vary")
    plan = make_plan(pick_candidates(sweep, top_k), top_k, seeds)
    sub = confirm_experiment(experiment)
    result_file = experiment.local / CONFIRM_FILE
    if check_saved_plan(sub.local, plan, location) and result_file.is_file():
        print(f"{location}: the confirmation is done ({len(run_points(plan))} runs in "
              f"{CONFIRM_FILE}); nothing to train. Its report: visiontune report {location}")  # fmt: skip
        return 0
    data = load_dataset(load_task(spec.task).DATA_FORMAT, spec.data_source, spec.data_options)
    roles = ", ".join(c["role"] for c in plan["candidates"])
    print(f"Confirming {roles} with seeds 0-{seeds - 1} at {spec.epochs} epochs: "
          f"{len(run_points(plan))} runs in {sub.location}", flush=True)  # fmt: skip
    try:
        rows = train_runs(spec, data, plan, sub, address, verbose)
    except SweepInterrupted as stop:
        print(f"\nConfirmation interrupted ({stop}); continue it with: visiontune confirm "
              f"{location} --top-k {top_k} --seeds {seeds}", file=sys.stderr)  # fmt: skip
        return 130
    write_json(result_file, rows)
    experiment.upload()
    _print_summary(experiment.local, location)
    return 0


def _print_summary(exp_dir: Path, location: str) -> None:
    from visiontune.analysis.confirmation import confirmation_notes, confirmed_tables
    from visiontune.analysis.report import markdown_table
    from visiontune.analysis.results import load_experiment

    sweep = load_experiment(exp_dir)
    title, table = confirmed_tables(sweep)[0]
    print(f"\n{title}\n\n{markdown_table(table)}\n\n{confirmation_notes(sweep)[0]}\n")
    print(f"Written: {location}/{CONFIRM_FILE}; the full report: visiontune report {location}")
