"""Every module imports: the cheapest bug to catch."""

import ast
import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import irpo

MODULES = sorted(m.name for m in pkgutil.walk_packages(irpo.__path__, "irpo."))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)


def test_the_loop_module_loads_no_torch():
    """`python -m irpo` imports the loop before it validates the config: a config error then
    answers in about a second, not after torch's and Lightning's 4-6 s of imports."""
    probe = "import sys, irpo.loop; print(sorted({'torch', 'lightning', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_importing_a_leaf_module_loads_no_hydra():
    """The pure modules (the objective, pairing, answer checking) are usable without the
    framework: `import irpo` registers nothing until irpo.conf_dir() or irpo.compose()."""
    probe = "import sys, irpo.loss, irpo.pairs, irpo.methods, irpo.tasks.answers; print(sorted({'hydra', 'lightning'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


IRPO = Path(irpo.__file__).resolve().parent


def imports_of(path: Path) -> set[str]:
    """The irpo modules a file imports, at any depth of the file (function-level imports too)."""
    out = set()
    package = ".".join(path.relative_to(IRPO.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in out if m in MODULES and m != "irpo"}


def test_no_import_circle_in_irpo():
    graph = {
        m: imports_of(IRPO.parent / (m.replace(".", "/") + ".py"))
        for m in MODULES
        if (IRPO.parent / (m.replace(".", "/") + ".py")).exists()
    }
    done, path = set(), []

    def visit(m: str) -> None:
        if m in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(m) :] + [m]))
        if m in done:
            return
        path.append(m)
        for n in sorted(graph.get(m, ())):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)


LAUNCHER = re.compile(
    r"^(RANK|LOCAL_RANK|GROUP_RANK|WORLD_SIZE|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT|TORCHELASTIC_\w+|SLURM_\w+)$"
)


def test_launcher_variables_are_read_in_distributed_only():
    """torchrun and srun answer rank, world and node questions through irpo/run/distributed.py
    alone (srun sets no RANK: a module reading it would take every SLURM rank for rank 0)."""
    for path in sorted(IRPO.rglob("*.py")):
        if path.name == "distributed.py":
            continue
        names = [
            n.value
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        assert not [n for n in names if LAUNCHER.match(n)], path


def test_under_srun_a_rank_other_than_0_writes_no_report_and_draws_no_bar(tmp_path, monkeypatch, capsys):
    """srun's rank 1 (SLURM_PROCID=1, no RANK): no report, no progress bar, no stage lines."""

    from irpo.analysis.report import report_at_end
    from irpo.run import progress

    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODEID", "0")
    monkeypatch.setenv(
        "SLURM_JOB_NAME", "irpo"
    )  # Lightning takes a job named bash or interactive for a shell, not srun
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    shutil.copytree(Path(__file__).parent / "fixtures" / "run_before_methods", tmp_path / "run")
    report_at_end(tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()
    with progress.stage("iter 0 · generate", runs=True):
        bar = progress.Progress(4, "samples")
        assert bar.bar.disable
        bar.close()
    assert not progress.on_terminal()
    # rank 0 of the same launch does both
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    assert progress.on_terminal()
    report_at_end(tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").exists()


def test_the_old_paths_of_the_analysis_stay():
    """irpo.report, irpo.results and irpo.dashboard re-export irpo/analysis/: the notebook's
    names, `python -m` of both, and the Hydra callback path that earlier runs recorded."""
    from hydra.utils import get_class

    from irpo import dashboard, report, results
    from irpo.analysis import dashboard as analysis_dashboard
    from irpo.analysis import figures
    from irpo.analysis import report as analysis_report
    from irpo.analysis import results as analysis_results

    assert get_class("irpo.report.ReportCallback") is analysis_report.ReportCallback
    assert (report.accuracy_figure, report.train_figure, report.logps_figure) == (
        figures.accuracy_figure,
        figures.train_figure,
        figures.logps_figure,
    )
    assert (results.load, results.pairs_across_iterations, results.eval_samples) == (
        analysis_results.load,
        analysis_results.pairs_across_iterations,
        analysis_results.eval_samples,
    )
    assert report.main is analysis_report.main and dashboard.main is analysis_dashboard.main
