"""irpo: Iterative Reasoning Preference Optimization (Pang et al., 2024, arXiv 2404.19733).

Importing irpo registers its config schemas, named sweeps and resolvers with Hydra, so
`hydra.compose` over `irpo.conf_dir()` works as it does for `python -m irpo`;
`irpo.compose(overrides)` does the whole of it in one call."""

from irpo.cli import compose, conf_dir, register_all

__version__ = "0.1.0"
__all__ = ["compose", "conf_dir", "register_all"]

register_all()
