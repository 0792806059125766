"""`python -m irpo [overrides]`: compose the config with Hydra and run the loop."""

from irpo.run.allocator import keep_freed_memory
from irpo.run.threads import set_wait

set_wait()  # before anything loads torch's OpenMP runtime
keep_freed_memory()  # before the imports that allocate, so they too leave reusable blocks

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from irpo.cli import conf_dir, exit_on_user_error, full_errors_requested, register_all, run_cli  # noqa: E402

register_all()  # here, not in main(): a launcher that unpickles main (submitit) imports this module first


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from irpo.loop import run  # loads no torch: a config error answers in ~1 s
    from irpo.run.preemption import stop_on_signals

    with stop_on_signals():
        return exit_on_user_error(lambda: run(cfg), full_errors_requested())


if __name__ == "__main__":
    run_cli(main)
