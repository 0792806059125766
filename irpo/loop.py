"""The Iterative RPO loop (Pang et al., 2024, Sec. 2), one iteration t = M_t → M_{t+1}:

    evaluate M_t → generate N samples per train prompt with M_t → reward → pairs →
    reference log-probs of M_t → train M_θ from M_t against reference M_t → M_{t+1}

and finally evaluate M_T. Each stage writes its files under iter_<t>/ in the run directory.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from irpo.artifacts import RunDir, read_json, write_json, write_jsonl
from irpo.config import temperature, validate
from irpo.data import IterationData
from irpo.errors import UserError
from irpo.evaluate import evaluate
from irpo.generation.base import LazyGenerator, render_prompt
from irpo.logging import RunLogger
from irpo.models.load import load_tokenizer
from irpo.plan import print_plan
from irpo.tasks.base import Task
from irpo.train import train_policy


def run(cfg: DictConfig) -> float | None:
    """Runs the loop; returns M_T's greedy test accuracy (the number a sweep optimises)."""
    validate(cfg)
    quiet_libraries()
    task: Task = instantiate(cfg.task)
    if cfg.dry_run or cfg.plan:
        print_plan(cfg, task)
        return None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = RunDir(HydraConfig.get().runtime.output_dir)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    train, test = task.load("train"), task.load("test")

    def render(examples):
        return [render_prompt(tokenizer, task.prompt(ex), cfg.model.chat_template) for ex in examples]

    train_prompts, test_prompts = render(train), render(test)
    logger = RunLogger(cfg, run_dir)
    last_iteration = 0 if cfg.method.train_on == "none" else cfg.iterations
    model_dir = str(cfg.model.path)
    try:
        for t in range(last_iteration + 1):
            iter_dir = run_dir.iter_dir(t)
            with LazyGenerator(lambda: open_generator(cfg, task, model_dir)) as generator:
                metrics = evaluated(cfg, task, test, test_prompts, generator, iter_dir, t)
                if t == last_iteration:
                    logger.log_iteration(t, metrics)
                    break
                data = IterationData(
                    task, train, train_prompts, iter_dir, t, tokenizer, cfg.method.train_on, cfg.num_samples,
                    temperature(cfg, t), cfg.pairs_per_prompt, cfg.max_pairs, cfg.gold_winner, cfg.seed,
                    cfg.model.max_length, cfg.trainer.micro_batch_size or cfg.trainer.batch_size,
                )
                generations = data.generate(generator) if cfg.method.train_on != "gold" else []
            if cfg.method.train_on != "gold":
                metrics |= data.make_pairs(generations)
                require_pairs(metrics, t)
            if cfg.method.train_on == "pairs" and cfg.trainer.reference == "precomputed":
                data.reference_logps(model_dir, cfg.model.dtype, cfg.model.trust_remote_code)
            new_model_dir, train_metrics = train_policy(cfg, data, model_dir, iter_dir, logger.lightning_loggers(iter_dir))
            metrics |= {f"train_{k}": v for k, v in train_metrics.items()} | {"dropped_too_long": data.dropped_too_long}
            write_json(iter_dir / "metrics.json", {"iteration": t, **metrics})
            logger.log_iteration(t, metrics)
            model_dir = str(new_model_dir)  # M_{t+1}: the next policy and the next reference
        logger.table()
        return logger.rows[-1]["test_accuracy"]
    finally:
        logger.finish()


def quiet_libraries() -> None:
    """Lightning prints through its own handler and Hydra's root handler (every line twice),
    transformers draws a progress bar per model load: keep one copy and no bars."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    logging.getLogger("lightning.pytorch").propagate = False
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*(litlogger|LeafSpec|log_every_n_steps|does not have many workers).*")


def open_generator(cfg: DictConfig, task: Task, model_dir: str):
    return instantiate(
        cfg.generator, model_dir=model_dir, stop=list(task.stop),
        max_new_tokens=cfg.generator.max_new_tokens or task.max_new_tokens,
    )


def evaluated(cfg, task, test, test_prompts, generator, iter_dir: Path, t: int) -> dict:
    """M_t's test metrics (iter_<t>/eval.json), computed once."""
    path = iter_dir / "eval.json"
    if not path.exists():
        metrics, records = evaluate(generator(), task, test, test_prompts, cfg.eval.maj_k, cfg.eval.maj_temperature, cfg.seed + t)
        write_jsonl(iter_dir / "eval_generations.jsonl", records)
        write_json(path, metrics)
    return read_json(path)


def require_pairs(metrics: dict, t: int) -> None:
    if metrics["pairs"] > 0:
        return
    raise UserError(
        f"iteration {t} made no pairs: of {metrics['prompts']} prompts, {metrics['prompts_no_winner']} had no correct "
        f"sample and {metrics['prompts_no_loser']} had no incorrect one; raise num_samples, or the temperature "
        "(temperatures=[...]) for more varied samples" + (", or set gold_winner=true" if metrics["prompts_no_winner"] else "")
    )
