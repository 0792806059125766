"""`dry_run=true` / `plan=true`: what a run would do, without loading any weights."""

from __future__ import annotations

from omegaconf import DictConfig

from irpo.config import temperature
from irpo.tasks import subsets
from irpo.tasks.base import Task


def print_plan(cfg: DictConfig, task: Task) -> None:
    """Loads and formats the data (so a bad path or row fails now), prints one rendered
    prompt and the work each iteration does."""
    train, test = task.load("train"), task.load("test")
    prompt = task.prompt(train[0])
    rendered = prompt if isinstance(prompt, str) else "\n".join(f"[{m['role']}] {m['content']}" for m in prompt)
    template = " (the model's chat template is applied at run time)" if cfg.model.chat_template else ""
    print(f"== prompt for train example {train[0].id}{template} ==\n{rendered}")
    print(f"== gold answer: {train[0].answer}")
    n, k, T = cfg.num_samples, cfg.pairs_per_prompt, cfg.iterations
    print("== plan ==")
    print(f"model      {cfg.model.path} ({cfg.model.dtype}), generator {cfg.generator._target_.rsplit('.', 1)[-1]}")
    tr = cfg.trainer
    length = f"{tr.max_steps} steps" if tr.max_steps > 0 else f"{tr.max_epochs} epoch(s)"
    print(f"trainer    {tr.strategy} on {tr.devices} {tr.accelerator} device(s) x {tr.num_nodes} node(s), batch {tr.batch_size} pairs, "
          f"lr {cfg.model.lr}, {length} per iteration")
    print(f"method     {cfg.method.name}: train on {cfg.method.train_on}, alpha={cfg.alpha}, beta={cfg.beta}")
    print(f"data       {len(train)} train prompts, {len(test)} test problems")
    print(subsets.describe(cfg.task, train=train, test=test))
    most = len(train) * k if cfg.max_pairs is None else min(len(train) * k, cfg.max_pairs)
    for t in range(T):
        print(f"iteration {t}: evaluate M_{t}; sample {len(train)} x {n} = {len(train) * n} completions at T={temperature(cfg, t)}; "
              f"at most {most} pairs; train M_{t + 1}")
    print(f"iteration {T}: evaluate M_{T} (greedy" + (f", maj@{cfg.eval.maj_k}" if cfg.eval.maj_k else "") + ")")
