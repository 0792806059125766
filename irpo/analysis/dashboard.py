"""`python -m irpo.dashboard --entity E --project P [--group G] [--by KEY ...] [--dry-run SPEC]`:
a W&B workspace that compares iterations, built from code (`wandb-workspaces`, the
`dashboard` extra).

Every panel plots a per-iteration metric (`iter/*`, logged against `iteration`) with runs
grouped by the swept config keys: test accuracy and maj@k, train pass@N and pairs, the DPO
and NLL losses, and the chosen and rejected log-probs. `--group` keeps one sweep's runs
(a sweep's W&B group is its directory's name); `--sweep DIR` takes the group and the swept
keys from a sweep directory on disk. Saving needs a W&B key; `--dry-run` writes the
workspace's JSON spec instead, without network.
"""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

from irpo.errors import ArgumentParser

X_AXIS = "iteration"

# (section, [(panel title, [y metrics])]); `{maj}` is the maj@k key of the runs.
SECTIONS = [
    ("Test accuracy of M_t", [("greedy test accuracy", ["iter/test_accuracy"]), ("test {maj}", ["iter/{maj}"])]),
    ("Samples of M_t", [("train pass@N", ["iter/train_pass_at_n"]), ("pairs", ["iter/pairs"])]),
    (
        "Training M_t -> M_t+1",
        [
            ("DPO loss", ["iter/train_dpo_loss"]),
            ("NLL loss (winners)", ["iter/train_nll_loss"]),
            ("log-probs: chosen and rejected", ["iter/train_chosen_logps", "iter/train_rejected_logps"]),
        ],
    ),
]


def build(entity: str, project: str, group: str | None, by: list[str], maj_k: int, name: str):
    """The workspace object (nothing is sent until `.save()`)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    maj = f"maj@{maj_k}"
    sections = [
        ws.Section(
            name=section,
            is_open=True,
            panel_settings=ws.SectionPanelSettings(x_axis=X_AXIS),
            panels=[
                wr.LinePlot(
                    title=title.format(maj=maj),
                    x=X_AXIS,
                    y=[y.format(maj=maj) for y in ys],
                    title_x=X_AXIS,
                    groupby_aggfunc="mean",
                    groupby_rangefunc="stddev",
                )
                for title, ys in panels
            ],
        )
        for section, panels in SECTIONS
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis=X_AXIS),
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == group] if group else "",
            groupby=[ws.Config(key) for key in by],
        ),
    )


def spec(workspace) -> dict:
    """The JSON the W&B API would receive for the workspace."""
    return workspace._spec


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(
        prog="python -m irpo.dashboard", description="A W&B workspace comparing the iterations of irpo runs."
    )
    p.add_argument("--entity", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--group", help="only the runs of this W&B group (a sweep directory's name)")
    p.add_argument("--sweep", type=Path, help="a sweep directory: its name is the group, its swept keys the grouping")
    p.add_argument(
        "--by", nargs="*", default=None, help="config keys to group runs by (default: the sweep's swept keys but seed)"
    )
    p.add_argument("--maj-k", type=int, default=8, help="the runs' eval.maj_k (the metric maj@k)")
    p.add_argument("--name", default=None, help="the workspace's name")
    p.add_argument(
        "--dry-run", type=Path, metavar="SPEC", help="write the workspace's JSON spec here instead of saving it"
    )
    args = p.parse_args(argv)
    from irpo.cli import exit_on_user_error, full_errors_requested

    exit_on_user_error(lambda: _run(args), full_errors_requested())


def _run(args: Namespace) -> None:
    from irpo.errors import UserError

    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        raise UserError("the dashboard needs wandb-workspaces: pip install 'irpo[dashboard]'") from None
    group, by = args.group, args.by
    if args.sweep is not None:
        from irpo.analysis.results import load

        sweep = load(args.sweep)
        group = group or sweep.root.name
        by = sweep.compared if by is None else by
    workspace = build(
        args.entity, args.project, group, by or [], args.maj_k, args.name or f"irpo: {group or args.project}"
    )
    if args.dry_run:
        args.dry_run.write_text(json.dumps(spec(workspace), indent=2, default=str))
        print(f"irpo dashboard: wrote the workspace spec to {args.dry_run} (not saved to W&B)")
        return
    workspace.save()
    print(f"irpo dashboard: {workspace.url}")


if __name__ == "__main__":
    main()
