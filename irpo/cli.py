"""What every entry point does around Hydra: register schemas and resolvers, and turn a
user's mistake (a bad key, value, file or path) into one line on stderr and exit code 2."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

# A full disk or quota is the user's to fix, not a bug: the one kind of OSError reported in one line.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


_PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str, packaged: str) -> Path:
    """A top-level folder of the checkout, or its copy inside the package when installed
    from a wheel (setup.py maps conf/ to irpo/conf and sweeps/ to irpo/sweeps)."""
    inside = _PACKAGE / packaged
    return inside if inside.is_dir() else _PACKAGE.parent / name


def conf_dir() -> Path:
    """Hydra's primary config directory: conf/."""
    return _shipped("conf", "conf")


def sweeps_dir() -> Path:
    """The named sweeps, the config group `sweep`: sweeps/."""
    return _shipped("sweeps", "sweeps")


def register_all() -> None:
    """Config schemas, the named sweeps, the `${irpo_asset:name}` resolver (files shipped
    in the package), `${package_file:package,name}` (a file inside another installed
    package) and the resolver that keeps the ranks of one launch in one run directory. The
    sweeps live outside conf/ (a top-level folder of their own), so they join the config as the group `sweep` through the ConfigStore rather than through a
    second search path, which would only see them at its root."""
    from hydra.core.config_store import ConfigStore

    from irpo.config import register

    register()
    store = ConfigStore.instance()
    for path in sorted(sweeps_dir().glob("*.yaml")):
        store.store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_")
    OmegaConf.register_new_resolver("irpo_asset", _asset, replace=True)
    OmegaConf.register_new_resolver("package_file", _package_file, replace=True)
    OmegaConf.register_new_resolver("irpo_choices", choices_help, replace=True)
    OmegaConf.register_new_resolver("irpo_suffix", lambda name: f"_{name}" if name else "", replace=True)
    # The ranks of one launch share one run directory (irpo.run.distributed).
    OmegaConf.register_new_resolver("irpo_run_name", _run_name, use_cache=True, replace=True)


def _asset(name: str) -> str:
    from irpo.models.load import ASSETS

    return ASSETS[name]()


def _package_file(package: str, name: str = "") -> str:
    from irpo.models.gguf import package_file

    return package_file(package, name)


def _run_name() -> str:
    from irpo.run.distributed import run_name

    return run_name()


def compose(overrides: Sequence[str] = (), config_name: str = "config"):
    """irpo's config as `python -m irpo <overrides>` would run it, from Python (a notebook,
    a script): `irpo.compose(["alpha=0", "task=gsm8k"])`. Leaves Hydra's global state as it
    found it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def choices_help() -> str:
    """The config groups and their options for `--help`, without the schema nodes that the
    YAML files extend (`arith_schema`): those are not choices a user makes."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group in sorted(loader.list_groups("")):
        if group == "hydra":
            continue
        options = [o for o in loader.get_group_options(group) if not o.endswith("_schema")]
        if options:
            lines.append(f"  {group}: {', '.join(options)}")
    return "\n".join(lines)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user's input is wrong, not that irpo has a bug."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from irpo.errors import ConfigError, UserError
    from irpo.models.load import ModelLoadError
    from irpo.run.artifacts import RunDirBusyError, StaleStageError

    return (
        HydraException,
        OmegaConfBaseException,
        ConfigError,
        ModelLoadError,
        UserError,
        StaleStageError,
        RunDirBusyError,
    )


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, user_errors()) or (isinstance(exc, OSError) and exc.errno in DISK_FULL)


def one_line(exc: BaseException) -> str:
    """The cause in one line: OmegaConf's `full_key` and message, Hydra's first line, the
    file a full disk stopped."""
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        where = f"{exc.strerror}{filesystem_of(exc.filename) if exc.filename else ''}"
        return (
            f"disk full while writing {exc.filename or 'the run directory'} ({where}); free space and rerun to resume"
        )
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        msg = str(getattr(cause, "msg", "") or cause).splitlines()[0]
        return f"{cause.full_key}: {msg}"
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Could not find" in text and lines:
        # Hydra lists the options over several lines; keep them on one, without the schemas.
        options = []
        for line in lines[2:]:
            if line.startswith("Config search path"):
                break
            if not line.endswith("_schema"):
                options.append(line)
        return f"{lines[0]}" + (f" (options: {', '.join(options)})" if options else "")
    return " ".join(lines) if len(lines) <= 3 else lines[0]


def filesystem_of(path: str) -> str:
    """`, on the filesystem mounted at <mount>, <n> free` for the nearest existing parent of path."""
    import shutil

    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    mount = p
    while not os.path.ismount(mount):
        mount = mount.parent
    return f", on the filesystem mounted at {mount}, {shutil.disk_usage(p).free / 2**20:,.0f} MiB free"


def exit_on_user_error(fn: Callable[[], object], full_errors: bool) -> object:
    """Run fn; a user error becomes `irpo: error: <one line>` and exit code 2. Used around
    Hydra (compose-time errors) and inside the job (errors found while running), since Hydra
    would otherwise print its own multi-line report for the latter. Under torchrun or srun
    every rank exits 2 and rank 0 alone prints the line (every rank meets the same config
    error, and rank 0's own errors are raised on every rank), except a full disk, which a
    rank may meet alone."""
    from irpo.run.distributed import rank

    try:
        return fn()
    except (*user_errors(), OSError) as exc:
        if full_errors or not is_user_error(exc):
            raise
        if rank() == 0 or isinstance(exc, OSError):
            print(f"irpo: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)


def full_errors_requested() -> bool:
    return os.environ.get("IRPO_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", "")) not in ("", "0")


class SweptKeyNotice(Callback):
    """Hydra lets a key given on the command line replace the values a named sweep gives
    it (`sweep=paper_mini seed=3,4,5` keeps the sweep's other axes): one line says so, since
    a single value shrinks the sweep along that axis."""

    def on_multirun_start(self, config, **kwargs) -> None:
        name = config.hydra.runtime.choices.get("sweep")
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        for override in config.hydra.overrides.task:
            key, _, value = override.partition("=")
            key = key.lstrip("+~")
            if name and key in params:
                print(
                    f"irpo: {key}={value} replaces the values {params[key]} that sweep {name} gives {key}",
                    file=sys.stderr,
                )


def run_cli(main: Callable[[], object]) -> None:
    full = full_errors_requested()
    # Asking Hydra to raise (instead of printing its multi-line report) lets one place word
    # every user error the same way; our own variable remembers what the user asked for.
    os.environ["IRPO_FULL_ERROR"] = "1" if full else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    exit_on_user_error(main, full)
