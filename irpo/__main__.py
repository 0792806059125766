"""`python -m irpo [overrides]`: compose the config with Hydra and run the loop."""

import os

# Idle OpenMP threads sleep instead of spinning: on cores that other jobs share, spinning
# threads wait on a descheduled one at every op (measured 10x slower training, bench/NOTES.md).
# It must be set before torch loads its OpenMP runtime, which reads it once.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from irpo.cli import conf_dir, exit_on_user_error, full_errors_requested, run_cli  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    def checked_run() -> float | None:
        from irpo.config import validate

        validate(cfg)  # before the loop's imports load torch: a config error answers in ~1 s
        from irpo.loop import run

        return run(cfg)

    return exit_on_user_error(checked_run, full_errors_requested())


if __name__ == "__main__":
    run_cli(main)
