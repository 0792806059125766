"""`python -m irpo [overrides]`: compose the config with Hydra and run the loop."""

import hydra
from omegaconf import DictConfig

from irpo.cli import conf_dir, exit_on_user_error, full_errors_requested, run_cli


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from irpo.loop import run

    return exit_on_user_error(lambda: run(cfg), full_errors_requested())


if __name__ == "__main__":
    run_cli(main)
