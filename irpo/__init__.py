"""irpo: Iterative Reasoning Preference Optimization (Pang et al., 2024, arXiv 2404.19733).

`irpo.conf_dir()` and `irpo.compose(overrides)` register irpo's config schemas, named sweeps
and resolvers with Hydra on first use, so `hydra.compose` over `irpo.conf_dir()` works as it
does for `python -m irpo`, and `irpo.compose` does the whole of it in one call. Importing
irpo, or a module of it such as `irpo.loss`, loads no Hydra."""

__version__ = "0.1.0"
__all__ = ["compose", "conf_dir", "register_all"]


def __getattr__(name: str):
    if name in __all__:
        from irpo import cli

        cli.register_all()
        return getattr(cli, name)
    raise AttributeError(f"module 'irpo' has no attribute {name!r}")
