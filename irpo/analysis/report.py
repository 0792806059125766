"""`python -m irpo.report <run or sweep dir>`: the jobs of a sweep side by side.

Reads only what runs leave on disk (each job's `.hydra/overrides.yaml` and `config.yaml`,
`metrics.jsonl`, `iter_<t>/train/metrics.csv`, `iter_<t>/pairs.jsonl`, `generations.jsonl`,
`eval_generations.jsonl`; the sweep's `multirun.yaml`) and writes into the directory:

    summary.csv, summary.json   one row per job x iteration: the job, its swept values, then
                                every per-iteration metric (summary.json also lists the jobs,
                                unfinished ones included, and the mean and std over seeds)
    accuracy.png                test accuracy (and maj@k) against iteration, one line per
                                configuration; mean +- std over seeds when the seed is swept
    train.png                   train pass@N and pairs per iteration
    logps.png                   chosen and rejected log-probs over training steps, iterations
                                end to end

and, when the sweep compares methods, reproduction.json (records.py) and the comparison it
calls for (writers.py, figures.py): REPRODUCTION.md with fig2_logps.png and fig3_logps.png
(the paper in miniature), OBJECTIVES.md with objectives_logps.png for sweep=objectives, or
CAPACITY.md with capacity.png for a sweep over M_0s.

It runs by itself at the end of every run and every multirun; by hand it also reads a
partial sweep and names the jobs that did not finish. It reads runs through results.py, as
notebooks/compare_iterations.ipynb and any other comparison do.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from typing import Any

from hydra.experimental.callback import Callback

from irpo.analysis import results
from irpo.analysis.figures import (
    accuracy_figure,
    capacity_figure,
    logp_figure,
    logps_figure,
    objectives_figure,
    train_figure,
)
from irpo.analysis.records import compares_m0s, compares_methods, compares_objectives, records
from irpo.analysis.results import Sweep, load
from irpo.analysis.writers import (
    CAPACITY_FIGURE,
    OBJECTIVES_FIGURE,
    REPRODUCTION_FIGURES,
    capacity_markdown,
    objectives_markdown,
    reproduction_markdown,
)
from irpo.errors import ArgumentParser
from irpo.run.artifacts import atomic_path, write_json

FIGURES = ("accuracy.png", "train.png", "logps.png")


def write_report(path: str | os.PathLike) -> Sweep:
    """summary.csv, summary.json and the figures, into the run or sweep directory."""
    sweep = load(path)
    rows = sweep.table()
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["job", *sweep.columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(sweep.root / "summary.csv") as tmp:
        tmp.write_text(buf.getvalue())
    write_json(
        sweep.root / "summary.json",
        {
            "directory": str(sweep.root),
            "swept": sweep.swept,
            "jobs": [
                {
                    "job": j.name,
                    "overrides": j.overrides,
                    "finished": j.finished,
                    "iterations_logged": len(j.rows),
                    "stopped_in": j.stopped_in,
                }
                for j in sweep.jobs
            ],
            "unfinished": [j.name for j in sweep.unfinished],
            "not_started": sweep.missing,
            "rows": rows,
            "seed_mean_std": _seed_table(sweep) if "seed" in sweep.swept else [],
        },
    )
    plot(sweep)
    if compares_methods(sweep):
        write_comparison(sweep)
    return sweep


def _seed_table(sweep: Sweep) -> list[dict]:
    out: dict[tuple[str, int], dict] = {}
    for metric in sweep.metrics():
        for label, points in sweep.aggregate(metric).items():
            for t, mean, std, n in points:
                row = out.setdefault((label, t), {"configuration": label, "iteration": t, "seeds": n})
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
    return list(out.values())


def plot(sweep: Sweep) -> None:
    """The figures of FIGURES, into the sweep directory."""
    _save(sweep, dict(zip(FIGURES, (accuracy_figure(sweep), train_figure(sweep), logps_figure(sweep)))))


def comparison_outputs(sweep: Sweep) -> list[str]:
    """The files `write_comparison` makes for this sweep."""
    if compares_objectives(sweep):
        return ["reproduction.json", "OBJECTIVES.md", OBJECTIVES_FIGURE]
    if compares_m0s(records(sweep)):
        return ["reproduction.json", "CAPACITY.md", CAPACITY_FIGURE]
    return ["reproduction.json", "REPRODUCTION.md", *REPRODUCTION_FIGURES]


def write_comparison(sweep: Sweep) -> None:
    """A sweep over methods: reproduction.json and the report it calls for, with its figures:
    OBJECTIVES.md for sweep=objectives, CAPACITY.md for a sweep over M_0s, REPRODUCTION.md
    (the paper in miniature) otherwise."""
    recs = records(sweep)
    write_json(sweep.root / "reproduction.json", recs)
    if compares_objectives(sweep):
        files = {OBJECTIVES_FIGURE: objectives_figure(recs), "OBJECTIVES.md": objectives_markdown(sweep, recs)}
    elif compares_m0s(recs):
        files = {CAPACITY_FIGURE: capacity_figure(recs), "CAPACITY.md": capacity_markdown(sweep, recs)}
    else:
        files = dict(
            zip(
                REPRODUCTION_FIGURES,
                (
                    logp_figure(
                        recs,
                        ("sft_chosen", "sft_gold", "irpo"),
                        "Fig. 2 in miniature: winners and losers under SFT (own winners, gold CoT) and IRPO",
                    ),
                    logp_figure(
                        recs,
                        ("dpo", "irpo"),
                        "Fig. 3 in miniature: winners and losers under DPO (alpha = 0) and IRPO (alpha = 1)",
                    ),
                ),
            )
        )
        files["REPRODUCTION.md"] = reproduction_markdown(sweep, recs)
    _save(sweep, files)


def _save(sweep: Sweep, files: dict[str, Any]) -> None:
    """Each file into the sweep directory, atomically: text as it is, a figure as PNG."""
    for name, content in files.items():
        with atomic_path(sweep.root / name) as tmp:
            if isinstance(content, str):
                tmp.write_text(content)
            else:
                content.savefig(tmp, dpi=110, format="png")


def describe(sweep: Sweep) -> str:
    """What the report found, for the terminal."""
    keys = (
        f"swept: {', '.join(sweep.swept) or 'nothing'}"
        if len(sweep.jobs) > 1
        else f"overrides: {', '.join(sweep.overridden) or 'none'}"
    )
    lines = [f"irpo report: {sweep.root}: {len(sweep.jobs)} job(s), {keys}"]
    for label, points in sweep.aggregate("test_accuracy").items():
        accs = " ".join(f"{m:.3f}" + (f"±{s:.3f}" if n > 1 else "") for _, m, s, n in points)
        lines.append(f"  {label}: test accuracy by iteration {accs}")
    for job in sweep.unfinished:
        where = f", stopped in {job.stopped_in}" if job.stopped_in else ""
        lines.append(
            f"  unfinished: job {job.name} ({' '.join(f'{k}={v}' for k, v in job.overrides.items())}): "
            f"{len(job.rows)} of {job.last_iteration + 1} iterations logged{where}"
        )
    for overrides in sweep.missing:
        lines.append(f"  not started: {overrides}")
    wrote = [*FIGURES, *comparison_outputs(sweep)] if compares_methods(sweep) else FIGURES
    lines.append(f"  wrote summary.csv, summary.json, {', '.join(wrote)}")
    return "\n".join(lines)


def report_at_end(path: str | os.PathLike) -> None:
    """The report a run writes when it ends: by one process only when a run has several
    ranks. A report that fails leaves the run's results as they are and says so."""
    from irpo.run.distributed import rank

    if rank() != 0:  # the launcher's rank (srun sets no RANK)
        return
    try:
        print(describe(write_report(path)))
    except Exception as exc:  # the results are on disk already; the report can be redone by hand
        print(
            f"irpo: warning: the report failed ({type(exc).__name__}: {exc}); rerun: python -m irpo.report {path}",
            file=sys.stderr,
        )


class ReportCallback(Callback):
    """Hydra calls this when every job of a multirun has ended (and not when one failed, so
    a partial sweep's report is written by hand: `python -m irpo.report <sweep dir>`)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if not (config.get("plan") or config.get("dry_run")):  # those jobs print a plan, they log nothing
            report_at_end(config.hydra.sweep.dir)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m irpo.report", description="Summary tables and figures of an irpo run or sweep directory."
    )
    parser.add_argument("directory", help="a run directory (outputs/...) or a sweep directory (multirun/...)")
    parser.add_argument(
        "--copy-to",
        metavar="DIR",
        help="copy the sweep's record (configs, metrics, events; no weights or samples) to DIR "
        "and write the report there, from the copy",
    )
    args = parser.parse_args(argv)
    from irpo.cli import exit_on_user_error, full_errors_requested

    def report() -> Sweep:
        if args.copy_to:
            results.copy_records(args.directory, args.copy_to)
        return write_report(args.copy_to or args.directory)

    exit_on_user_error(lambda: print(describe(report())), full_errors_requested())


if __name__ == "__main__":
    main()
