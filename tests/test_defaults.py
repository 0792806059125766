"""Each default is written once: in the schema (irpo/config.py, irpo/tasks/schemas.py,
irpo/generation/schemas.py, a Method's own fields). A preset YAML sets only what differs from
its schema, so that changing a default changes it everywhere; the keys table in the docs is
checked against the schema."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from irpo.config import IrpoConfig, LoggerConfig, ModelConfig, TrainerConfig
from irpo.generation.schemas import GENERATOR_SCHEMAS
from irpo.tasks.schemas import TASK_SCHEMAS

CONF = Path(__file__).parents[1] / "conf"
SCHEMAS = {
    "config.yaml": IrpoConfig, **{f"task/{k}.yaml": v for k, v in TASK_SCHEMAS.items()},
    **{f"generator/{k}.yaml": v for k, v in GENERATOR_SCHEMAS.items()},
    **{f"model/{p.name}": ModelConfig for p in (CONF / "model").glob("*.yaml")},
    **{f"trainer/{p.name}": TrainerConfig for p in (CONF / "trainer").glob("*.yaml")},
    **{f"logger/{p.name}": LoggerConfig for p in (CONF / "logger").glob("*.yaml")},
}


def defaults(schema) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)


def restated(values: dict, schema_defaults: dict, prefix: str = "") -> list[str]:
    """The keys of a preset whose value is its schema's default."""
    out = []
    for key, value in values.items():
        if key in ("defaults", "hydra") or key not in schema_defaults:
            continue
        default = schema_defaults[key]
        if isinstance(value, dict) and isinstance(default, dict):
            out += restated(value, default, f"{prefix}{key}.")
        elif value == default and not (isinstance(value, float) != isinstance(default, float) and value is not None):
            out.append(f"{prefix}{key}")
    return out


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_a_preset_sets_only_what_differs_from_its_schema(name):
    values = OmegaConf.to_container(OmegaConf.load(CONF / name) or OmegaConf.create(), resolve=False)
    assert restated(values, defaults(SCHEMAS[name])) == [], f"conf/{name} restates its schema's defaults"


def test_a_restated_default_is_found():
    assert restated({"batch_size": 16, "max_epochs": 2}, defaults(TrainerConfig)) == ["batch_size"]


def test_every_dataclass_schema_is_checked():
    assert {f.type for f in dataclasses.fields(IrpoConfig)} >= {"ModelConfig", "TrainerConfig", "LoggerConfig"}
