"""The paper in miniature: the verdicts on made-up records, then a reduced `sweep=paper_mini`
(one seed, tiny sizes) and its report, checked against the jobs' own metrics files."""

import json

import pytest

from irpo.artifacts import read_jsonl
from irpo.reproduction import verdicts


def _rec(method, seed, t, acc, **logps):
    return {"method": method, "seed": seed, "iteration": t, "greedy_acc": acc, "maj_acc": None, **logps}


def _records(irpo_accs, dpo_m1, sft_accs, dpo_chosen=(-2.0, -2.5), irpo_chosen=(-2.0, -1.8)):
    recs = []
    for seed, bump in ((0, 0.0), (1, 0.01)):
        for t, a in enumerate(irpo_accs):
            lp = {"chosen_logp_start": irpo_chosen[0], "chosen_logp_end": irpo_chosen[1], "rejected_logp_start": -3.0, "rejected_logp_end": -3.5} if t else {}
            recs.append(_rec("irpo", seed, t, a + bump, **lp))
        recs.append(_rec("dpo", seed, 0, irpo_accs[0] + bump))
        recs.append(_rec("dpo", seed, 1, dpo_m1 + bump, chosen_logp_start=dpo_chosen[0], chosen_logp_end=dpo_chosen[1],
                         rejected_logp_start=-3.0, rejected_logp_end=-4.0))
        for t, a in enumerate(sft_accs):
            lp = {"chosen_logp_start": -2.0, "chosen_logp_end": -1.9, "rejected_logp_start": -3.0, "rejected_logp_end": -2.9} if t else {}
            recs.append(_rec("sft_chosen", seed, t, a + bump, **lp))
    return recs


def _by_claim(recs):
    return {v["claim"].split(":")[0]: v["reproduced"] for v in verdicts(recs)}


def test_verdicts_when_the_paper_reproduces():
    found = _by_claim(_records([0.40, 0.50, 0.55], 0.30, [0.40, 0.45, 0.46]))
    assert found == {
        "IRPO improves over iterations": True,
        "The NLL term matters": True,
        "IRPO's best iteration above sft_chosen's best by more than the seeds' std (Table 1": True,
        "Fig. 3": True,
        "Fig. 2": True,
    }
    assert all(v["reproduced"] for v in verdicts(_records([0.40, 0.50, 0.55], 0.30, [0.40, 0.45, 0.46])))


def test_verdicts_when_it_does_not():
    recs = _records([0.40, 0.45, 0.44], 0.47, [0.40, 0.46, 0.47], dpo_chosen=(-2.0, -1.9), irpo_chosen=(-2.0, -2.1))
    v = {x["claim"]: x["reproduced"] for x in verdicts(recs)}
    assert not any(ok for claim, ok in v.items() if not claim.startswith("Fig. 2: SFT"))
    by_text = {x["claim"][:20]: x["numbers"] for x in verdicts(recs)}
    assert "M_0 40.5, M_1 45.5, M_2 44.5" in by_text["IRPO improves over i"].replace(" ± 0.7", "")


def test_a_gain_within_seed_noise_is_not_a_reproduction():
    # irpo's mean is above sft's, but by less than the seeds' std
    recs = [_rec("irpo", s, t, a) for s, accs in ((0, (0.4, 0.50)), (1, (0.4, 0.40))) for t, a in enumerate(accs)]
    recs += [_rec("sft_chosen", s, t, a) for s, accs in ((0, (0.4, 0.44)), (1, (0.4, 0.44))) for t, a in enumerate(accs)]
    v = next(x for x in verdicts(recs) if "sft_chosen" in x["claim"])
    assert v["reproduced"] is False and "std 7.1" in v["numbers"]


MINI = ["iterations=2", "task.train_size=32", "task.test_size=24", "task.validation_size=16", "selection.val_size=16",
        "selection.val_every_n_steps=2", "trainer.max_steps=4", "trainer.batch_size=8", "num_samples=4", "eval.maj_k=2",
        "logger=none", "trainer.progress_bar=false", "seed=0"]


@pytest.mark.slow
def test_reduced_paper_mini_and_its_report(tmp_path, cli):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "sweep=paper_mini", *MINI, f"hydra.sweep.dir={sweep}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = json.loads((sweep / "reproduction.json").read_text())
    assert {r["method"] for r in records} == {"irpo", "dpo", "sft_chosen", "sft_gold", "zero_shot"}
    jobs = [d for d in sweep.iterdir() if (d / ".hydra").is_dir()]
    by_job = {}
    for d in jobs:
        method = next(o.split("=")[1] for o in (d / ".hydra" / "overrides.yaml").read_text().split() if o.startswith("method="))
        by_job[method] = read_jsonl(d / "metrics.jsonl")
    for r in records:
        rows = {row["iteration"]: row for row in by_job[r["method"]]}
        assert r["seed"] == 0 and r["greedy_acc"] == rows[r["iteration"]]["test_accuracy"] and r["maj_acc"] == rows[r["iteration"]]["maj@2"]
        if r["iteration"] >= 1 and r["method"] in ("irpo", "dpo", "sft_chosen"):
            trained = rows[r["iteration"] - 1]  # the training that produced M_t
            for key in ("chosen_logp_start", "chosen_logp_end", "rejected_logp_start", "rejected_logp_end"):
                assert r[key] == trained[key]
    assert max(r["iteration"] for r in records if r["method"] == "irpo") == 2
    # M_0 is every arm's: its evaluation ran once, and its samples once for the arms that sample
    methods = {next(o.split("=")[1] for o in (d / ".hydra" / "overrides.yaml").read_text().split() if o.startswith("method=")): d for d in jobs}
    first = min(jobs, key=lambda d: int(d.name))
    for method, d in methods.items():
        reused = {e["stage"] for e in read_jsonl(d / "events.jsonl") if e.get("event") == "reused"}
        assert reused == (set() if d == first else {"iter_0/eval", "iter_0/generate"} if method != "zero_shot" else {"iter_0/eval"})
        assert (d / "iter_0" / "eval.json").read_text() == (first / "iter_0" / "eval.json").read_text()
    assert [r["iteration"] for r in records if r["method"] == "zero_shot"] == [0]
    text = (sweep / "REPRODUCTION.md").read_text()
    assert "Table 1 in miniature" in text and "| irpo |" in text and "## Verdicts" in text and "python -m irpo -m" in text
    assert "Commit:" in text and (sweep / "fig2_logps.png").stat().st_size > 0 and (sweep / "fig3_logps.png").stat().st_size > 0
