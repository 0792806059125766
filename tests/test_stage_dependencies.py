"""Each stage depends on the config keys it declares (its Stage, beside its code): a key no
stage names changes no finished stage; a declared one that changed is refused on resume,
naming it, and resume=overwrite redoes from the first stage that reads it."""

from functools import partial

import pytest
from omegaconf import OmegaConf

import irpo
from irpo.loop import iteration_stages, stage_config
from irpo.run.artifacts import RunDir, Stages, StaleStageError
from irpo.spec import build

STAGES = iteration_stages()
STAGE_KINDS = tuple(stage.kind for stage in STAGES)


def finished(run, cfg) -> Stages:
    stages = Stages(RunDir(run), STAGES, partial(stage_config, build(cfg)))
    for t in (0, 1):
        for kind in STAGE_KINDS:
            stages.finish(t, kind, 1.0, None)
    return stages


def test_a_key_no_stage_declares_resumes_a_finished_run_without_redoing_anything(tmp_path):
    finished(tmp_path / "run", irpo.compose([]))
    changed = irpo.compose(["trainer.log_every_n_steps=7", "planner.gpu=h200", "trainer.checkpoint_every_seconds=600"])
    grown = OmegaConf.create(OmegaConf.to_container(changed))  # untyped, to take keys a later schema adds
    grown.trainer.new_knob, grown.new_setting = 7, "on"
    later = Stages(RunDir(tmp_path / "run"), STAGES, partial(stage_config, build(grown)))
    later.check(overwrite=False)
    assert all(later.done(t, kind) for t in (0, 1) for kind in STAGE_KINDS)


def test_a_changed_declared_key_is_refused_and_overwrite_redoes_from_its_first_reader(tmp_path):
    finished(tmp_path / "run", irpo.compose([]))
    later = Stages(RunDir(tmp_path / "run"), STAGES, partial(stage_config, build(irpo.compose(["pairs_per_prompt=2"]))))
    with pytest.raises(StaleStageError, match=r"stage iter_0/pairs made with other values of pairs_per_prompt;"):
        later.check(overwrite=False)
    later.check(overwrite=True)
    # M_0's evaluation and samples do not read it; everything from the pairs on is redone
    assert later.done(0, "eval") and later.done(0, "generate")
    assert not any(later.done(t, kind) for t in (0, 1) for kind in STAGE_KINDS[2:]) and not later.done(1, "eval")


def test_from_iteration_1_every_stage_depends_on_what_made_m_t():
    spec = build(irpo.compose([]))
    assert "beta" not in str(stage_config(spec, 0, "eval")) and "method.beta" in stage_config(spec, 1, "eval")
    assert "method.beta" not in stage_config(spec, 0, "pairs") and "method.beta" in stage_config(spec, 0, "train")
    assert (
        stage_config(spec, 0, "generate")["temperatures"] == [0.8]
        and stage_config(spec, 0, "eval")["temperatures"] == []
    )
    assert len(set(STAGE_KINDS)) == len(STAGE_KINDS) == 7
