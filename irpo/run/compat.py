"""What earlier versions of irpo recorded, read in today's terms: every compatibility with an
earlier run format lives here, so that an old run directory resumes and reports and nothing
else needs to know its format.

- Methods before they were objects: `method.train_on` (pairs, winners, gold, none), with
  `alpha` and `beta` at the config's root, where today `method._target_` names the class.
- Partial-work stamps from before they held their values: the config hash alone.

Dependency values hold class paths (`method._target_`, `generator._target_`): a class that
moves keeps its old path readable through a map here, which records then go through.
"""

from __future__ import annotations

from typing import Any

from irpo import methods

# What each `method.train_on` of a run recorded before methods were objects trained.
BEFORE_OBJECTS = {"pairs": methods.DPO, "winners": methods.WinnerSFT, "gold": methods.GoldSFT, "none": methods.ZeroShot}


def method_node(cfg: Any) -> dict[str, Any]:
    """The `method` node of a recorded config (a DictConfig or a dict) in today's fields."""
    fields = methods.method_fields(cfg)
    if "_target_" in fields:
        return fields
    cls = BEFORE_OBJECTS[fields["train_on"]]
    out = {"_target_": f"{cls.__module__}.{cls.__qualname__}", "name": fields["name"], "sample": fields.get("sample")}
    return out | ({"alpha": cfg.get("alpha", 1.0), "beta": cfg.get("beta", 0.1)} if cls is methods.DPO else {})


def recorded_method(cfg: Any) -> methods.Method:
    """The Method a recorded config ran."""
    return methods.build({"method": method_node(cfg)})


def recorded_values(flat: dict[str, Any]) -> dict[str, Any]:
    """A stage's recorded config values in today's keys: a record from before methods were
    objects is described as the Method it ran, so that such a run resumes without redoing its
    finished stages."""
    if "method.train_on" not in flat:
        return flat
    fields = {k.removeprefix("method."): v for k, v in flat.items() if k.startswith("method.")}
    method = recorded_method({"method": fields, "alpha": flat.get("alpha", 1.0), "beta": flat.get("beta", 0.1)})
    return {k: v for k, v in flat.items() if not k.startswith("method.")} | methods.described(method)


def hash_only(stamp: dict[str, Any]) -> bool:
    """Whether a partial-work stamp is from before stamps held their values (its hash alone)."""
    return "config" not in stamp
