"""Each default is written once: in the schema (irpo/config.py, irpo/tasks/schemas.py,
irpo/generation/schemas.py, a Method's own fields). A preset YAML sets only what differs from
its schema, so that changing a default changes it everywhere; the keys table in the docs is
checked against the schema."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from irpo.config import IrpoConfig, LoggerConfig, ModelConfig, TrainerConfig
from irpo.generation.schemas import GENERATOR_SCHEMAS
from irpo.tasks.schemas import TASK_SCHEMAS

CONF = Path(__file__).parents[1] / "conf"
SCHEMAS = {
    "config.yaml": IrpoConfig,
    **{f"task/{k}.yaml": v for k, v in TASK_SCHEMAS.items()},
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


def literal_defaults(cls) -> dict[str, object]:
    """The defaults written as literals in a class's constructor (or its dataclass fields)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args.args[len(node.args.args) - len(node.args.defaults) :] + node.args.kwonlyargs
            defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            out |= {a.arg: d.value for a, d in zip(args, defaults) if isinstance(d, ast.Constant)}
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.target, ast.Name)
        ):
            out[node.target.id] = node.value.value
    return out


def built_from() -> list[tuple[type, type]]:
    from irpo.generation.base import Decoding
    from irpo.generation.hf import HFGenerator
    from irpo.generation.schemas import GeneratorConfig
    from irpo.generation.vllm import VLLMGenerator
    from irpo.training.module import PolicyTraining

    pairs = [(get_class(s._target_), s) for s in TASK_SCHEMAS.values()]
    return pairs + [
        (HFGenerator, GENERATOR_SCHEMAS["hf"]),
        (VLLMGenerator, GENERATOR_SCHEMAS["vllm"]),
        (PolicyTraining, TrainerConfig),
        (PolicyTraining, ModelConfig),
        (Decoding, GeneratorConfig),
    ]


@pytest.mark.parametrize("cls,schema", built_from(), ids=lambda c: c.__name__)
def test_what_a_schema_builds_takes_its_defaults_from_it(cls, schema):
    # a field whose schema value is an interpolation (generator.dtype: ${model.dtype}) holds no default of its own
    held = {f.name for f in dataclasses.fields(schema) if not str(f.default).startswith("${")}
    written = {name: value for name, value in literal_defaults(cls).items() if name in held}
    assert not written, f"{cls.__name__} writes again defaults that {schema.__name__} holds: {written}"


def test_the_keys_table_in_the_docs_gives_the_defaults_a_run_gets():
    import yaml

    import irpo
    from irpo import methods
    from irpo.config import flat_config

    cfg = irpo.compose([])
    run = flat_config(cfg) | methods.described(methods.build(cfg))
    checked = 0
    for line in (CONF.parent / "docs" / "configuration.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        keys, default = (c.strip() for c in line.split("|")[1:3])
        names = [k.strip(" `") for k in keys.split(",")]
        if any("*" in n for n in names) or not all(n in run or n.endswith("_kwargs") for n in names):
            continue  # a wildcard, or a config group's row (the second table)
        texts = (
            [v.strip(" `") for v in default.split(" (")[0].split(", ")]
            if len(names) > 1
            else [default.split(" (")[0].strip(" `")]
        )
        for name, text in zip(names, texts):
            assert yaml.safe_load(text) == run.get(name, {}), (
                f"docs/configuration.md: {name} says {text}, a run gets {run.get(name)!r}"
            )
            checked += 1
    assert checked >= 20, checked
