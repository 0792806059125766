"""irpo.report on hand-made run directories (exact numbers), then on real sweeps: the named
sweep with its report, W&B runs and notebook, a killed sweep, submitit_local, TensorBoard."""

from __future__ import annotations

import json
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from irpo.analysis.figures import moving_average
from irpo.analysis.report import FIGURES, write_report
from irpo.analysis.results import generation_samples, load, pairs_across_iterations, train_steps
from irpo.run.artifacts import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "iterations=1",
    "task.train_size=32",
    "task.test_size=8",
    "num_samples=4",
    "eval.maj_k=2",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
]
PNG = b"\x89PNG\r\n\x1a\n"


def make_job(
    root: Path,
    name: str,
    overrides: list[str],
    accuracies: list[float],
    iterations: int = 2,
    stopped_in: str | None = None,
    method: str = "irpo",
) -> Path:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"iterations": iterations, "method": {"_target_": "irpo.methods.DPO", "name": method}}),
        d / ".hydra" / "config.yaml",
    )
    OmegaConf.save(OmegaConf.create(overrides), d / ".hydra" / "overrides.yaml")
    write_jsonl(
        d / "metrics.jsonl",
        [{"iteration": t, "test_accuracy": a, "pairs": 10 * (t + 1)} for t, a in enumerate(accuracies)],
    )
    if stopped_in:
        write_jsonl(
            d / "events.jsonl",
            [
                {"stage": "iter_0/train", "event": "start"},
                {"stage": "iter_0/train", "event": "finish"},
                {"stage": stopped_in, "event": "start"},
            ],
        )
    return d


@pytest.fixture
def seed_sweep(tmp_path):
    """alpha x seed, 2 x 2 jobs defined; job 2 stopped in iteration 1, job 3 never started."""
    root = tmp_path / "sweep"
    root.mkdir()
    sweeper = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": {"alpha": "0,1"}}
    OmegaConf.save(
        OmegaConf.create({"hydra": {"sweeper": sweeper, "overrides": {"task": ["seed=0,1", "sweep=x"]}}}),
        root / "multirun.yaml",
    )
    make_job(root, "0", ["alpha=0", "seed=0", "sweep=x"], [0.4, 0.5, 0.6])
    make_job(root, "1", ["alpha=0", "seed=1", "sweep=x"], [0.4, 0.3, 0.2])
    make_job(root, "2", ["alpha=1", "seed=0", "sweep=x"], [0.4, 0.45], stopped_in="iter_1/generate")
    return root


def test_seeds_are_aggregated_per_configuration(seed_sweep):
    sweep = load(seed_sweep)
    assert sweep.swept == ["alpha", "seed"] and sweep.compared == ["alpha"]
    acc = sweep.aggregate("test_accuracy")
    assert [p[0] for p in acc["alpha=0"]] == [0, 1, 2]
    t1 = acc["alpha=0"][1]
    assert t1[1] == pytest.approx(0.4) and t1[2] == pytest.approx(statistics.stdev([0.5, 0.3])) and t1[3] == 2
    assert acc["alpha=1"] == [(0, 0.4, 0.0, 1), (1, 0.45, 0.0, 1)]


def test_partial_sweep_names_unfinished_and_unstarted_jobs(seed_sweep):
    sweep = write_report(seed_sweep)
    assert [j.name for j in sweep.unfinished] == ["2"] and sweep.jobs[2].stopped_in == "iter_1/generate"
    assert sweep.missing == ["alpha=1 seed=1 sweep=x"]
    summary = json.loads((seed_sweep / "summary.json").read_text())
    assert summary["unfinished"] == ["2"] and summary["not_started"] == ["alpha=1 seed=1 sweep=x"]
    assert len(summary["rows"]) == 3 + 3 + 2
    assert {"configuration": "alpha=0", "iteration": 2, "seeds": 2}.items() <= summary["seed_mean_std"][2].items()
    assert summary["seed_mean_std"][2]["test_accuracy_mean"] == pytest.approx(0.4)
    header, first = (seed_sweep / "summary.csv").read_text().splitlines()[:2]
    assert header.split(",")[:5] == ["job", "alpha", "seed", "iteration", "test_accuracy"] and first.startswith(
        "0,0,0,0,0.4"
    )
    for name in FIGURES:
        assert (seed_sweep / name).read_bytes()[:8] == PNG


def test_report_cli_on_partial_sweep(seed_sweep):
    proc = subprocess.run([sys.executable, "-m", "irpo.report", str(seed_sweep)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (
        "unfinished: job 2 (alpha=1 seed=0 sweep=x): 2 of 3 iterations logged, stopped in iter_1/generate"
        in proc.stdout
    )
    assert "not started: alpha=1 seed=1 sweep=x" in proc.stdout


def test_report_cli_refuses_a_directory_without_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "irpo.report", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("irpo: error: ") and len(proc.stderr.splitlines()) == 1


def _legend_inside(fig) -> list[str]:
    """The figure's own legends (under the axes) lie inside its canvas once drawn at the
    report's dpi; returns their labels."""
    import io

    fig.savefig(io.BytesIO(), dpi=110, format="png")
    canvas = fig.bbox
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        box = legend.get_window_extent()
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1, (
            box,
            canvas,
        )
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_figure_lines_are_named_as_the_tables_name_the_arms(tmp_path):
    """A sweep over experiments names each line by the method its config composed (`dpo`, not
    `experiment=paper_mini/dpo`), under a legend that stays inside the canvas however long the
    names; a sweep over another key keeps key=value."""
    from irpo.analysis.figures import accuracy_figure, train_figure

    long = "a_very_long_experiment_folder_name_that_would_run_off_the_canvas"
    for i, method in enumerate(
        ("irpo", "dpo", "sft_chosen", "sft_gold", "zero_shot", "a_user_objective_with_a_long_name")
    ):
        make_job(
            tmp_path / "by_method", str(i), [f"experiment={long}/{method}", "seed=0"], [0.4, 0.5, 0.6], method=method
        )
    sweep = load(tmp_path / "by_method")
    for fig in (accuracy_figure(sweep), train_figure(sweep)):
        assert _legend_inside(fig) == [
            "irpo",
            "dpo",
            "sft_chosen",
            "sft_gold",
            "zero_shot",
            "a_user_objective_with_a_long_name",
        ]
        assert fig.legends[0].get_title().get_text() == "method"
    for alpha in (0, 1):
        make_job(tmp_path / "by_alpha", str(alpha), [f"alpha={alpha}"], [0.4, 0.5, 0.6])
    assert _legend_inside(accuracy_figure(load(tmp_path / "by_alpha"))) == ["alpha=0", "alpha=1"]


@pytest.mark.parametrize(
    "report", ["paper_mini/REPRODUCTION.md", "paper_mini/capacity/CAPACITY.md", "objectives/OBJECTIVES.md"]
)
def test_the_committed_figures_name_their_lines_as_their_tables_do(report):
    """Every summary figure of a committed report: its legend inside the canvas, each line
    named as the report's table names the arm (and the M_0, in the capacity sweep)."""
    from irpo.analysis.figures import accuracy_figure, logps_figure, train_figure

    committed = ROOT / "docs" / report
    text, sweep = committed.read_text(), load(committed.parent)
    for figure in (accuracy_figure, train_figure, logps_figure):
        labels = _legend_inside(figure(sweep))
        assert labels and len(set(labels)) == len(labels), figure
        for label in labels:
            if "capacity" in report:
                arm, m0 = label.split(", ")
                assert arm in ("irpo", "sft_chosen") and f"| `{m0}` |" in text, label
            else:
                assert f"\n| {label} |" in text, label
    if "REPRODUCTION" in report:  # Figs. 2-3 name the methods they draw, as Table 1 does
        from irpo.analysis.figures import logp_figure
        from irpo.analysis.records import records

        fig = logp_figure(records(sweep), ("dpo", "irpo"), "Fig. 3")
        _legend_inside(fig)
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:2] == [
            "dpo",
            "irpo",
        ] and "\n| dpo |" in text


def test_train_steps_run_on_across_iterations(tmp_path):
    job_dir = make_job(tmp_path, "run", [], [0.1, 0.2, 0.3])
    for t in (0, 1):
        (job_dir / f"iter_{t}" / "train").mkdir(parents=True)
        (job_dir / f"iter_{t}" / "train" / "metrics.csv").write_text(
            "epoch,iteration,step,train/chosen_logps,train/rejected_logps\n0,%d,0,-2.0,-3.0\n0,%d,4,-1.5,-3.5\n"
            % (t, t)
        )
    rows = train_steps(load(job_dir).jobs[0])
    assert [(r["iteration"], r["step"], r["progress"], r["train/chosen_logps"]) for r in rows] == [
        (0, 0, 0.2, -2.0),
        (0, 4, 1.0, -1.5),
        (1, 5, 1.2, -2.0),
        (1, 9, 2.0, -1.5),
    ]
    assert moving_average([1.0, 2.0, 3.0, 5.0], 2) == [1.0, 1.5, 2.5, 4.0]


def test_samples_know_winners_and_losers(tmp_path):
    job_dir = make_job(tmp_path, "run", [], [0.1, 0.2, 0.3])
    for t, good in ((0, "a"), (1, "b")):
        it = job_dir / f"iter_{t}"
        it.mkdir()
        write_jsonl(
            it / "generations.jsonl",
            [
                {"prompt_id": pid, "sample": j, "completion": c, "answer": c, "reward": float(c == good)}
                for pid in ("p0", "p1")
                for j, c in enumerate((good, "x", "y"))
            ],
        )
        write_jsonl(
            it / "pairs.jsonl",
            [
                {"prompt_id": pid, "prompt": f"Q {pid}", "chosen": good, "rejected": "x", "chosen_is_gold": False}
                for pid in ("p1", "p0")
            ],
        )
    rows = generation_samples(job_dir / "iter_1", {"p0": "Q p0"}, 1)
    assert [(r["iteration"], r["prompt"], r["completion"], r["role"]) for r in rows] == [
        (1, "Q p0", "b", "winner"),
        (1, "Q p0", "x", "loser"),
        (1, "Q p0", "y", ""),
    ]
    pairs = pairs_across_iterations(load(job_dir).jobs[0])
    assert [(p["iteration"], p["prompt_id"], p["winner"], p["loser"]) for p in pairs] == [
        (0, "p1", "a", "x"),
        (1, "p1", "b", "x"),
    ]


def wandb_run_records(path: Path) -> list:
    """The run records of an offline .wandb file (W&B's LevelDB-style log of protobuf records:
    a 7-byte file header, then 32 KiB blocks of chunks with a 7-byte header each)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, buf, runs = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            if record.WhichOneof("record_type") == "run":
                runs.append(record.run)
            buf = b""
    return runs


@pytest.fixture(scope="module")
def named_sweep(tmp_path_factory):
    """`python -m irpo -m sweep=nll_ablation` on tiny sizes, W&B offline as by default."""
    from conftest import run_cli

    sweep = tmp_path_factory.mktemp("sweeps") / "nll_ablation"
    proc = run_cli("-m", "sweep=nll_ablation", *TINY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return sweep, proc


@pytest.mark.slow
def test_named_sweep_writes_its_report(named_sweep):
    sweep, proc = named_sweep
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["swept"] == ["alpha"] and summary["unfinished"] == [] == summary["not_started"]
    assert [(r["job"], r["alpha"], r["iteration"]) for r in summary["rows"]] == [
        ("0", "0", 0),
        ("0", "0", 1),
        ("1", "1", 0),
        ("1", "1", 1),
    ]
    assert all("test_accuracy" in r and "maj@2" in r for r in summary["rows"])
    for name in FIGURES:
        assert (sweep / name).read_bytes()[:8] == PNG
    assert "irpo report: " in proc.stdout and "alpha=1: test accuracy by iteration" in proc.stdout
    # Each job writes its own report too, and the command reads a finished run as well.
    assert (sweep / "0" / "summary.csv").exists()
    proc = subprocess.run([sys.executable, "-m", "irpo.report", str(sweep / "1")], capture_output=True, text=True)
    assert proc.returncode == 0 and "1 job(s)" in proc.stdout and "unfinished" not in proc.stdout, proc.stderr
    assert len(json.loads((sweep / "1" / "summary.json").read_text())["rows"]) == 2


@pytest.mark.slow
def test_one_wandb_run_per_job_in_one_group(named_sweep):
    sweep, _ = named_sweep
    for job, alpha in (("0", "0"), ("1", "1")):
        files = list((sweep / job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 1, files
        (run,) = wandb_run_records(files[0])
        assert run.run_group == "nll_ablation" and run.job_type == "irpo"
        assert run.display_name.startswith(f"alpha={alpha},") and "sweep=" not in run.display_name
        assert set(run.tags) == {"task:arith", "model:tiny", "method:irpo"}
        tables = [p.name for p in files[0].parent.glob("files/media/table/samples/*.table.json")]
        assert any(n.startswith("generations_") for n in tables) and sum(n.startswith("eval_") for n in tables) == 2
        table = json.loads(next(files[0].parent.glob("files/media/table/samples/generations_*.table.json")).read_text())
        assert table["columns"] == ["iteration", "prompt_id", "prompt", "completion", "answer", "reward", "role"]
        assert {row[-1] for row in table["data"]} <= {"winner", "loser", ""} and table["data"][0][2].startswith("Q: ")


@pytest.mark.slow
def test_notebook_executes_headless(named_sweep, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    sweep, _ = named_sweep
    nb = nbformat.read(ROOT / "notebooks" / "compare_iterations.ipynb", as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = f"SWEEP_DIR = {str(sweep)!r}"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert any("alpha=1" in o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_report_by_hand_on_a_killed_sweep(tmp_path):
    """The second job is killed while saving M_1 (SIGKILL, as on a preempted node): Hydra
    never calls on_multirun_end, and the report by hand names the job."""
    from conftest import run_cli

    sweep = tmp_path / "killed"
    proc = run_cli(
        "-m",
        "method=zero_shot,irpo",
        *TINY,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        env={"IRPO_FAILPOINT": "before-rename:model"},
    )
    assert proc.returncode != 0 and not (sweep / "summary.json").exists()
    proc = subprocess.run([sys.executable, "-m", "irpo.report", str(sweep)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "unfinished: job 1 (method=irpo" in proc.stdout and "stopped in iter_0/train" in proc.stdout
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["unfinished"] == ["1"] and [r["method"] for r in summary["rows"]] == ["zero_shot"]


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    from conftest import run_cli

    sweep = tmp_path / "submitit"
    proc = run_cli("-m", "hydra/launcher=submitit_local", "alpha=0,1", *TINY, "logger=none", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Submitit 'local' sweep" in proc.stdout + proc.stderr
    for job in ("0", "1"):
        assert [r["iteration"] for r in read_jsonl(sweep / job / "metrics.jsonl")] == [0, 1]
    assert list((sweep / ".submitit").iterdir())  # the jobs ran as submitit subprocesses
    assert json.loads((sweep / "summary.json").read_text())["swept"] == ["alpha"]


@pytest.mark.slow
def test_tensorboard_logger_carries_iteration_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from conftest import run_cli
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    proc = run_cli(*TINY, "logger=tensorboard", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not (run / "wandb").exists()
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    rows = read_jsonl(run / "metrics.jsonl")
    assert [(e.step, e.value) for e in events.Scalars("iter/test_accuracy")] == [
        (r["iteration"], pytest.approx(r["test_accuracy"])) for r in rows
    ]
    assert [e.step for e in events.Scalars("iter/pairs")] == [0]
    assert "train/chosen_logps" in events.Tags()["scalars"]


def test_under_srun_only_rank_zero_writes_the_report(tmp_path, monkeypatch, capsys):
    """srun sets SLURM_PROCID, not RANK: the rank comes from the launcher, as everywhere."""
    from irpo.analysis.report import report_at_end

    for name in ("RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "irpo")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    report_at_end(tmp_path / "run")  # rank 1: nothing, not even an attempt
    assert capsys.readouterr() == ("", "") and not list(tmp_path.iterdir())
    monkeypatch.setenv("SLURM_PROCID", "0")
    report_at_end(tmp_path / "run")  # rank 0 tries (and, with no run there, says so)
    assert "the report failed" in capsys.readouterr().err


def test_a_lone_runs_overrides_are_not_called_swept(tmp_path):
    """A single run's command-line values are overrides; "swept" names a multirun's axes only."""
    from irpo.analysis.report import describe

    make_job(tmp_path, "run", ["task=gsm8k", "num_samples=4"], [0.1, 0.2])
    sweep = load(tmp_path / "run")
    assert sweep.swept == [] and sweep.overridden == ["task", "num_samples"] == sweep.columns
    first = describe(sweep).splitlines()[0]
    assert first.endswith("1 job(s), overrides: task, num_samples") and "swept" not in first
    assert {"task", "num_samples"} <= set(sweep.table()[0])
