"""visiontune command line: tune, report, compare, confirm, train, data make.

    visiontune tune search_spaces/classifier.yaml            # sweep, then print the report table
    visiontune report runs/classifier                        # report.md, trials.csv, best_config.yaml
    visiontune train search_spaces/classifier.yaml --config runs/classifier/report/best_config.yaml
    visiontune data make ir-solar-modules --out DIR
    visiontune compare runs/tpe runs/random                  # compare.md, compare.csv, compare.png
    visiontune confirm runs/classifier --top-k 3 --seeds 5   # confirm.json: every config x 5 seeds

Bad input exits with code 2 and one line on stderr naming the file, key and value.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visiontune.errors import InputError, SweepInterrupted

# Spec keys an option writes besides its own (visiontune.spec.OVERRIDE_PATHS): a --max-epochs
# below the scheduler's grace period shortens the grace period with it.
FLAG_TARGETS = {"max_epochs": ("scheduler.grace_period",)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiontune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tune = sub.add_parser("tune", help="run a hyperparameter sweep on Ray Tune")
    tune.add_argument("space", help="sweep spec YAML, e.g. search_spaces/classifier.yaml")
    tune.add_argument("--num-samples", type=int, help="trials in total (seed points included)")
    tune.add_argument("--max-epochs", type=int, help="epoch budget per trial (max_t)")
    tune.add_argument("--data", help="ImageFolder dir or YOLO data.yaml (overrides data.source)")
    tune.add_argument("--storage", default="./runs", help="where experiments live (default ./runs)")
    tune.add_argument("--name", help="experiment name: letters, digits, -_. (default: the spec's "
                      "name or file stem)")  # fmt: skip
    tune.add_argument(
        "--address",
        help="attach to a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: "
        "$RAY_ADDRESS, set inside `ray job submit` jobs; else a local Ray on 127.0.0.1)",
    )
    tune.add_argument("--cpus-per-trial", type=float, help="CPU cores per trial")
    tune.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions pack trials)")
    tune.add_argument("--max-concurrent", type=int, help="trials at once (default: every slot)")
    tune.add_argument("--seed", type=int, help="searcher seed")
    tune.add_argument("--max-failures", type=int,
                      help="retries of a trial whose worker or node died (from its checkpoint)")  # fmt: skip
    tune.add_argument("--resume", action="store_true",
                      help="continue the interrupted sweep STORAGE/NAME (finished trials are kept; "
                      "its files are checked first; a finished sweep is left as it is)")  # fmt: skip
    tune.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                      help="fix a trainable parameter for every trial (repeatable)")  # fmt: skip
    tune.add_argument("--verbose", action="store_true",
                      help="print Ray Tune's own output too (trial tables, status, worker logs); "
                      "it always goes to STORAGE/NAME/sweep.log")  # fmt: skip

    report = sub.add_parser("report", help="write report.md, trials.csv, best_config.yaml")
    report.add_argument("experiment", help="experiment directory STORAGE/NAME")
    report.add_argument("--out", help="output directory (default STORAGE/NAME/report)")

    compare = sub.add_parser("compare", help="compare sweeps: best-so-far figure and table")
    compare.add_argument("experiments", nargs="+", help="two or more experiments STORAGE/NAME")
    compare.add_argument("--out", help="output directory (default ./compare-<UTC time>)")

    confirm = sub.add_parser(
        "confirm", help="re-train the seed and top-k configurations with several seeds, test each"
    )
    confirm.add_argument("experiment", help="a finished sweep STORAGE/NAME (a directory or URI)")
    confirm.add_argument("--top-k", type=int, default=3,
                         help="tuned configurations to confirm, best first (default 3)")  # fmt: skip
    confirm.add_argument("--seeds", type=int, default=5,
                         help="training seeds 0..S-1 per configuration (default 5, at least 2)")  # fmt: skip
    confirm.add_argument("--address", help="attach to a running Ray cluster: auto or HOST:PORT "
                         "(default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")  # fmt: skip
    confirm.add_argument("--verbose", action="store_true", help="print Ray Tune's own output too "
                         "(it always goes to STORAGE/NAME/confirm/sweep.log)")  # fmt: skip

    train = sub.add_parser("train", help="train one configuration without a search")
    train.add_argument("space", help="sweep spec YAML (its fixed settings and data)")
    train.add_argument(
        "--config", help="YAML of parameter values, e.g. a report's best_config.yaml"
    )
    train.add_argument("--data", help="ImageFolder dir or YOLO data.yaml (overrides data.source)")
    train.add_argument("--max-epochs", type=int, help="epochs to train")
    train.add_argument("--out", help="directory for checkpoint.pt and metrics.json")
    train.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE"
    )

    data = sub.add_parser("data", help="embedded datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    make = data_sub.add_parser("make", help="write an embedded dataset as an ImageFolder tree")
    make.add_argument("dataset", help="ir-solar-modules (ImageFolder) or pv-arrays (YOLO layout)")
    make.add_argument("--out", required=True, help="output directory (must not exist)")
    make.add_argument("--seed", type=int, default=0)
    return parser


def abs_data(value: str | None) -> str | None:
    return str(Path(value).expanduser().resolve()) if value else None


def cmd_tune(args: argparse.Namespace) -> int:
    from visiontune.data import load_dataset
    from visiontune.storage import open_experiment
    from visiontune.sweep import check_address, keep_ray_on_loopback
    from visiontune.sweep.compat import hide_checkpoint_lines
    from visiontune.sweep.driver import sweep_and_report, sweep_on_head
    from visiontune.trainables import load_task

    overrides = {
        "num_samples": args.num_samples,
        "max_epochs": args.max_epochs,
        "data": abs_data(args.data),
        "cpus_per_trial": args.cpus_per_trial,
        "gpus_per_trial": args.gpus_per_trial,
        "max_concurrent": args.max_concurrent,
        "seed": args.seed,
        "max_failures": args.max_failures,
    }
    spec = load_tune_spec(args.space, overrides, args.assignments)
    # Inside a Ray job (`ray job submit`), Ray names the cluster in RAY_ADDRESS: attach to it.
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        keep_ray_on_loopback()
    else:
        check_address(address)
    if not args.verbose:
        hide_checkpoint_lines()  # before Ray is imported
    experiment = open_experiment(args.storage, *_experiment_name(args, spec))
    experiment.check_writable()
    if args.resume:
        changed = [k for k, v in overrides.items() if v is not None] + args.assignments
        if changed:
            raise InputError(f"--resume: the sweep's spec cannot change on resume, got {changed}")
        spec = _resumable_spec(experiment)
        if spec is None:
            print(f"{experiment.location}: the sweep finished; nothing to resume. "
                  f"Its report: visiontune report {experiment.location}")  # fmt: skip
            return 0
    elif experiment.exists():
        raise experiment.exists_error()
    task = load_task(spec.task)
    data = load_dataset(task.DATA_FORMAT, spec.data_source, spec.data_options)
    try:
        if address and address.startswith("ray://"):
            exp_dir, report, table = sweep_on_head(
                address, spec, data, experiment, args.resume, args.verbose
            )
        else:
            exp_dir, report, table = sweep_and_report(
                spec, data, experiment, address, args.resume, args.verbose
            )
    except SweepInterrupted as stop:
        print(
            f"\nSweep interrupted ({stop}); its state is saved in {experiment.location}.\n"
            f"Continue it with: visiontune tune {args.space} --storage {args.storage} "
            f"--name {experiment.name} --resume",
            file=sys.stderr,
        )
        return 130
    where = f"{experiment.uri}\nLocal copy: {exp_dir}" if experiment.uri else exp_dir
    print(f"\nExperiment: {where}\nReport:     {report}\n")
    print(table)
    return 0


def load_tune_spec(space: str, overrides: dict[str, Any], assignments: list[str]) -> Any:
    """The spec with the command line's options applied. A value the spec's checks refuse is
    named by its flag (`--max-failures: must be >= 0, got -1`), not blamed on the file: an
    error at a key an option wrote to is the option's when the spec without that option does
    not fail the same way."""
    from visiontune.overrides import OVERRIDE_PATHS
    from visiontune.spec import load_spec

    try:
        return load_spec(space, overrides, assignments)
    except InputError as exc:
        message = str(exc)
        key, _, problem = message.removeprefix(f"{space}: ").partition(": ")
        for option, value in overrides.items():
            targets = (".".join(OVERRIDE_PATHS[option]), *FLAG_TARGETS.get(option, ()))
            if value is None or key not in targets:
                continue
            try:
                load_spec(space, {**overrides, option: None}, assignments)
            except InputError as without:
                if str(without) == message:
                    continue  # the file's own value fails without the option too
            raise InputError(f"--{option.replace('_', '-')}: {problem}") from None
        raise


def _experiment_name(args: argparse.Namespace, spec: Any) -> tuple[str, str]:
    """The experiment's name and where it came from (for an error about it)."""
    if args.name is not None:
        return args.name, "--name"
    if spec.raw.get("name"):
        return spec.name, f"{args.space}: name"
    return spec.name, f"{args.space}: the file's name (the default experiment name; use --name)"


def _resumable_spec(experiment: Any) -> Any:
    """The spec of the interrupted sweep `experiment` once every file its resume reads is
    checked, before Ray starts (visiontune.sweep.preflight); None when it already finished."""
    from visiontune.sweep.preflight import check_resumable, finished

    experiment.mirror()  # a URI storage's files, fresh in the driver's mirror
    try:
        if finished(experiment):
            return None
        return check_resumable(experiment)  # the search space a sweep started with is fixed
    except InputError as exc:
        if not experiment.uri:
            raise
        bare = experiment.uri.split("?")[0]  # name the file in the storage, not in the mirror
        raise InputError(str(exc).replace(str(experiment.local), bare)) from None


REPORT_FILES = ("report.md", "trials.csv", "best_config.yaml", "report.tex", "report.html")


def cmd_report(args: argparse.Namespace) -> int:
    from visiontune.analysis.report import write_report
    from visiontune.layout import REPORT_DIR
    from visiontune.storage import open_report_source

    with tempfile.TemporaryDirectory(prefix="visiontune-report-") as scratch:
        experiment, local = open_report_source(args.experiment, Path(scratch))
        out = write_report(local, args.out)
        print((out / "report.md").read_text())
        names = sorted(p.name for p in out.iterdir() if p.is_file())
        written = [n for n in REPORT_FILES if n in names]
        plots = [n for n in names if n.endswith(".png")]
        written += [f"{len(plots)} plots (PNG)"] if plots else []
        if experiment.uri:  # the report goes back next to the sweep (and to --out if given)
            experiment.upload_dir(out, REPORT_DIR)
            print(f"Written: {experiment.uri.split('?')[0]}/{REPORT_DIR}/ ({', '.join(written)})"
                  + (f" and {out}/" if args.out else ""))  # fmt: skip
        else:
            print(f"Written: {out}/{', '.join(written)}")
        if "best_config.yaml" not in names:
            print("No best_config.yaml: the sweep has no tested tuned best (it did not finish; "
                  "`visiontune tune ... --resume` continues it)")  # fmt: skip
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from visiontune.analysis.compare import compare_command

    out = compare_command(args.experiments, args.out)
    print((out / "compare.md").read_text())
    print(f"Written: {out}/compare.md, compare.csv, compare.png")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from visiontune.sweep import check_address, keep_ray_on_loopback
    from visiontune.sweep.compat import hide_checkpoint_lines

    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        keep_ray_on_loopback()
    if not args.verbose:
        hide_checkpoint_lines()  # before Ray is imported
    from visiontune.confirm import check_request, confirm_command

    check_request(args.top_k, args.seeds)
    if address and not address.startswith("ray://"):
        check_address(address)
    return confirm_command(args.experiment, args.top_k, args.seeds, address, args.verbose)


def cmd_data(args: argparse.Namespace) -> int:
    from visiontune.data import make_embedded

    start = time.perf_counter()
    path = make_embedded(args.dataset, Path(args.out).expanduser(), seed=args.seed)
    print(f"Written {args.dataset} to {path} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from visiontune.train import train_command

    return train_command(args)


COMMANDS = {
    "tune": cmd_tune,
    "report": cmd_report,
    "compare": cmd_compare,
    "confirm": cmd_confirm,
    "train": cmd_train,
    "data": cmd_data,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        print(f"visiontune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
