"""The paper in miniature: the verdicts on made-up records, then a reduced `sweep=paper_mini`
(one seed, tiny sizes) and its report, checked against the jobs' own metrics files."""

import json
import re

import pytest
from omegaconf import OmegaConf

from irpo.analysis.claims import comparisons, verdicts
from irpo.analysis.intervals import paired, t_quantile
from irpo.analysis.records import chosen, seed_sets
from irpo.analysis.writers import numbers, statement, summary
from irpo.run.artifacts import read_jsonl


def _rec(method, seed, t, acc, **logps):
    return {"method": method, "seed": seed, "iteration": t, "greedy_acc": acc, "maj_acc": None, **logps}


def _records(irpo_accs, dpo_m1, sft_accs, dpo_chosen=(-2.0, -2.5), irpo_chosen=(-2.0, -1.8), seeds=(0, 1, 2)):
    """Seed s adds jitter[s] points to every accuracy and log-prob move, so that paired
    differences keep their sign and intervals have a width."""
    jitter = {0: 0.0, 1: 0.01, 2: -0.005, 3: 0.004, 4: -0.01, 5: 0.002}
    recs = []
    for seed in seeds:
        bump = jitter[seed % 6]
        move = lambda start, end: {"start": start, "end": end + bump}  # noqa: E731
        for t, a in enumerate(irpo_accs):
            c, r = move(*irpo_chosen), move(-3.0, -3.5)
            lp = (
                {
                    "chosen_logp_start": c["start"],
                    "chosen_logp_end": c["end"],
                    "rejected_logp_start": r["start"],
                    "rejected_logp_end": r["end"],
                }
                if t
                else {}
            )
            recs.append(_rec("irpo", seed, t, a + (bump if t else 0), **lp))
        recs.append(_rec("dpo", seed, 0, irpo_accs[0]))
        c = move(*dpo_chosen)
        recs.append(
            _rec(
                "dpo",
                seed,
                1,
                dpo_m1 - bump,
                chosen_logp_start=c["start"],
                chosen_logp_end=c["end"],
                rejected_logp_start=-3.0,
                rejected_logp_end=-4.0,
            )
        )
        for t, a in enumerate(sft_accs):
            lp = (
                {
                    "chosen_logp_start": -2.0,
                    "chosen_logp_end": -1.9 + bump,
                    "rejected_logp_start": -3.0,
                    "rejected_logp_end": -2.9 + bump,
                }
                if t
                else {}
            )
            recs.append(_rec("sft_chosen", seed, t, a - (bump if t else 0), **lp))
    return recs


def _by_claim(recs):
    return {v.name: v.reproduced for v in verdicts(recs)}


def test_t_quantiles_and_a_paired_interval_by_hand():
    for df, table in ((1, 12.7062), (2, 4.3027), (5, 2.5706), (11, 2.2010), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-4)
    # differences .02, .04, .03: mean .03, std .01, half-width 4.3027 x .01 / sqrt(3)
    i = paired([0.02, 0.04, 0.03])
    assert (i.mean, i.n) == (pytest.approx(0.03), 3)
    assert (i.low, i.high) == (pytest.approx(0.03 - 0.0248417, abs=1e-6), pytest.approx(0.03 + 0.0248417, abs=1e-6))
    assert (
        i.verdict is True
        and paired([0.05, -0.01]).verdict is False
        and paired([0.05]).verdict is None
        and paired([]) is None
    )


def test_each_seed_is_taken_at_the_iteration_its_validation_picks():
    recs = [
        {**_rec("irpo", 0, t, acc), "val_accuracy": val}
        for t, acc, val in ((0, 0.4, None), (1, 0.6, 0.50), (2, 0.5, 0.52), (3, 0.7, 0.52))
    ]
    recs += [_rec("sft_chosen", 0, t, acc) for t, acc in ((0, 0.4), (1, 0.9), (2, 0.45))]
    # irpo: M_2 (best validation, earliest of the tie with M_3), not M_3 (best on test);
    # sft_chosen, run without validation: its last iteration, not its best on test
    assert chosen(recs, "irpo")[0]["iteration"] == 2 and chosen(recs, "sft_chosen")[0]["iteration"] == 2
    ((arm, diff),) = comparisons(recs)
    assert arm == "sft_chosen" and diff.mean == pytest.approx(0.05) and diff.low is None


def test_verdicts_when_the_paper_reproduces():
    recs = _records([0.40, 0.50, 0.55], 0.30, [0.40, 0.45, 0.46])
    assert _by_claim(recs) == {
        "IRPO improves over iterations: M_1 above M_0 and M_2 above M_1": True,
        "The NLL term matters: IRPO above DPO": True,
        "IRPO above SFT on its own winners, STaR": True,
        "Fig. 3: over the training that made M_1, the chosen log-prob falls under DPO and rises under IRPO": True,
        "Fig. 2: SFT on the chosen sequences raises the rejected log-probs too": True,
        "Fig. 2: DPO + NLL raises the chosen log-probs and lowers the rejected ones": True,
    }
    assert "95% interval [" in numbers(verdicts(recs)[0]) and "3 seeds" in numbers(verdicts(recs)[0])
    # the verdict table states a claim with its source; the summary names it, from the same Claim
    first, nll = verdicts(recs)[0], next(v for v in verdicts(recs) if v.name.startswith("The NLL term"))
    assert (
        statement(first) == "IRPO improves over iterations: M_1 above M_0 and M_2 above M_1 (Table 1: 55.6, 73.1, 78.0)"
    )
    assert (
        statement(nll)
        == "The NLL term matters: IRPO above DPO (Table 1: 73.1 vs 61.8), each at its validation-chosen iteration"
    )
    assert summary(verdicts(recs)).startswith(
        "Holds here: IRPO improves over iterations: M_1 above M_0 and M_2 above M_1; IRPO above SFT on its own winners, STaR; The NLL term matters"
    )


def test_verdicts_when_it_does_not():
    recs = _records([0.40, 0.45, 0.44], 0.47, [0.40, 0.46, 0.47], dpo_chosen=(-2.0, -1.9), irpo_chosen=(-2.0, -2.1))
    v = {x.name: x.reproduced for x in verdicts(recs)}
    assert not any(ok for claim, ok in v.items() if not claim.startswith("Fig. 2: SFT"))
    assert "Does not hold here: IRPO improves over iterations" in summary(verdicts(recs))


def test_a_gain_within_seed_noise_is_not_a_reproduction():
    # irpo's mean is above sft's (+3 points), but one seed of two has it below
    recs = [_rec("irpo", s, t, a) for s, accs in ((0, (0.4, 0.50)), (1, (0.4, 0.40))) for t, a in enumerate(accs)]
    recs += [
        _rec("sft_chosen", s, t, a) for s, accs in ((0, (0.4, 0.44)), (1, (0.4, 0.40))) for t, a in enumerate(accs)
    ]
    v = next(x for x in verdicts(recs) if "SFT on its own winners" in x.name)
    assert v.reproduced is False and numbers(v) == "irpo − sft_chosen +3.0 points, 95% interval [-35.1, +41.1], 2 seeds"


def test_a_second_set_of_seeds_replicates_each_verdict():
    recs = _records([0.40, 0.50, 0.55], 0.30, [0.40, 0.45, 0.46], seeds=range(12))
    assert seed_sets(recs) == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert [v.reproduced for v in verdicts([r for r in recs if r["seed"] < 6])] == [
        v.reproduced for v in verdicts([r for r in recs if r["seed"] >= 6])
    ]


MINI = [
    "iterations=2",
    "task.train_size=32",
    "task.test_size=24",
    "task.validation_size=16",
    "selection.val_size=16",
    "selection.val_every_n_steps=2",
    "trainer.max_steps=4",
    "trainer.batch_size=8",
    "num_samples=4",
    "eval.maj_k=2",
    "logger=none",
    "trainer.progress_bar=false",
    "seed=0",
]


@pytest.mark.slow
def test_reduced_paper_mini_and_its_report(tmp_path, cli):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "sweep=paper_mini", *MINI, f"hydra.sweep.dir={sweep}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = json.loads((sweep / "reproduction.json").read_text())
    assert {r["method"] for r in records} == {"irpo", "dpo", "dpop", "sft_chosen", "sft_gold", "zero_shot"}
    assert {r["hidden"] for r in records} == {128}  # mini_m0's width, as each launch recorded its model's shape
    jobs = [d for d in sweep.iterdir() if (d / ".hydra").is_dir()]
    by_job = {}
    for d in jobs:
        by_job[d.name.rsplit("_seed", 1)[0]] = read_jsonl(d / "metrics.jsonl")
    for r in records:
        rows = {row["iteration"]: row for row in by_job[r["method"]]}
        assert (
            r["seed"] == 0
            and r["greedy_acc"] == rows[r["iteration"]]["test_accuracy"]
            and r["maj_acc"] == rows[r["iteration"]]["maj@2"]
        )
        if r["iteration"] >= 1 and r["method"] in ("irpo", "dpo", "dpop", "sft_chosen"):
            trained = rows[r["iteration"] - 1]  # the training that produced M_t
            for key in ("chosen_logp_start", "chosen_logp_end", "rejected_logp_start", "rejected_logp_end"):
                assert r[key] == trained[key]
    assert max(r["iteration"] for r in records if r["method"] == "irpo") == 2
    # M_0 is every arm's: its evaluation ran once, and its samples once for the arms that sample
    # each job is named by its arm (the method its config composed) and seed: a rerun resumes them
    methods = {OmegaConf.load(d / ".hydra" / "config.yaml").method.name: d for d in jobs}
    assert sorted(d.name for d in jobs) == sorted(f"{m}_seed0" for m in methods)
    first = methods["irpo"]  # the sweep's first arm
    for method, d in methods.items():
        reused = {e["stage"] for e in read_jsonl(d / "events.jsonl") if e.get("event") == "reused"}
        assert reused == (
            set() if d == first else {"iter_0/eval", "iter_0/generate"} if method != "zero_shot" else {"iter_0/eval"}
        )
        assert (d / "iter_0" / "eval.json").read_text() == (first / "iter_0" / "eval.json").read_text()
    assert [r["iteration"] for r in records if r["method"] == "zero_shot"] == [0]
    text = (sweep / "REPRODUCTION.md").read_text()
    assert (
        "Table 1 in miniature" in text and "| irpo |" in text and "## Verdicts" in text and "python -m irpo -m" in text
    )
    assert (
        "Commit:" in text
        and (sweep / "fig2_logps.png").stat().st_size > 0
        and (sweep / "fig3_logps.png").stat().st_size > 0
    )
    # the sweep's record alone (no weights, no samples) gives the same report
    from irpo.analysis.report import main as report

    report([str(sweep), "--copy-to", str(tmp_path / "copy" / "sweep")])
    assert (tmp_path / "copy" / "sweep" / "REPRODUCTION.md").read_text() == text
    assert not list((tmp_path / "copy").rglob("*.safetensors")) and not list(
        (tmp_path / "copy").rglob("generations.jsonl")
    )


@pytest.mark.slow
def test_reduced_objectives_sweep_and_its_report(tmp_path, cli):
    """sweep=objectives on four of its arms (KTO trains on every sample, SimPO runs no reference
    pass): OBJECTIVES.md names each arm's recipe, its difference from IRPO and from STaR, and a
    sentence whose numbers are the records'."""
    sweep = tmp_path / "sweep"
    arms = "experiment=paper_mini/irpo,paper_mini/kto,paper_mini/simpo,paper_mini/sft_chosen"
    proc = cli(
        "-m",
        "sweep=objectives",
        arms,
        "seed=0,1",
        *[o for o in MINI if not o.startswith(("seed=", "iterations="))],
        "iterations=1",
        f"hydra.sweep.dir={sweep}",
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    from irpo.analysis.records import chosen, difference

    text = (sweep / "OBJECTIVES.md").read_text()
    records = json.loads((sweep / "reproduction.json").read_text())
    assert not (sweep / "REPRODUCTION.md").exists() and (sweep / "objectives_logps.png").stat().st_size > 0
    assert re.search(r"\| kto \| lr [0-9.e-]+, α 0, beta 0\.1 \|", text) and re.search(
        r"\| simpo \| lr [0-9.e-]+, α 0, beta 2, gamma 1 \|", text
    )
    diff = difference(chosen(records, "kto"), chosen(records, "irpo"))
    assert (
        f"{100 * diff.mean:+.1f} points, 95% interval [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}], 2 seeds" in text
    )
    sentences = [line for line in text.splitlines() if line.startswith("- **")]
    assert [s.split("**")[1] for s in sentences] == ["sft_chosen", "irpo", "kto", "simpo"]
    assert all("log-prob" in s for s in sentences)
    events = {
        d.name: [e.get("stage") for e in read_jsonl(d / "events.jsonl")]
        for d in sweep.iterdir()
        if (d / "events.jsonl").exists()
    }
    assert "iter_0/reference" not in events["simpo_seed0"] and "iter_0/reference" in events["kto_seed0"]


def test_capacity_pairs_irpo_with_star_m0_by_m0():
    """Each M_0 is its own row, ordered by width: two builds of one width stay apart."""
    from irpo.analysis.claims import capacity
    from irpo.analysis.records import compares_m0s

    recs = []
    for m0, hidden, gap in (
        ("models/w256", 256, 0.05),
        ("${irpo_asset:mini_m0}", 128, 0.0),
        ("models/w64", 64, -0.02),
        ("models/b1", 128, 0.03),
    ):
        for seed, noise in ((0, 0.0), (1, 0.01), (2, -0.01)):
            recs += [
                {**_rec("irpo", seed, 1, 0.4 + gap + noise), "hidden": hidden, "m0": m0},
                {**_rec("sft_chosen", seed, 1, 0.4), "hidden": hidden, "m0": m0},
            ]
    found = capacity(recs)
    assert list(found) == ["models/w64", "${irpo_asset:mini_m0}", "models/b1", "models/w256"] and compares_m0s(recs)
    assert [round(d.mean, 6) for d in found.values()] == [-0.02, 0.0, 0.03, 0.05]
    assert [d.verdict for d in found.values()] == [False, False, True, True]
    assert not compares_m0s([{**r, "m0": "models/w64"} for r in recs])


@pytest.mark.parametrize(
    "report", ["paper_mini/REPRODUCTION.md", "paper_mini/capacity/CAPACITY.md", "objectives/OBJECTIVES.md"]
)
def test_the_committed_reports_regenerate_from_their_own_files(tmp_path, report):
    """docs/ keeps each sweep's record (python -m irpo.report --copy-to); the report
    written from a copy of it is the committed one, byte for byte."""
    from pathlib import Path

    from irpo.analysis.report import write_comparison
    from irpo.analysis.results import copy_records, load

    committed = Path(__file__).resolve().parents[1] / "docs" / report
    copy = tmp_path / committed.parent.name
    copy_records(committed.parent, copy)
    sweep = load(copy)
    # every job its sweep file names was run: paper_mini_capacity's ${irpo_asset:mini_m0} matches
    # the path its jobs recorded, in whatever checkout they ran
    assert sweep.missing == []
    write_comparison(sweep)
    assert (copy / committed.name).read_text() == committed.read_text()


def test_a_jobs_time_counts_its_launches_not_the_waits_between_them():
    from irpo.analysis.writers import _busy

    events = [
        {"event": "launch", "time": 100.0},
        {"event": "start", "time": 101.0},
        {"event": "finish", "time": 160.0},
        {"event": "launch", "time": 5000.0},
        {"event": "finish", "time": 5003.0},
    ]
    assert _busy(events) == 63.0 and _busy([]) == 0.0
