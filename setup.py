"""Everything but the package list lives in pyproject.toml. conf/ and sweeps/ stay at the top
of the repository and ship inside the package (irpo/conf, irpo/sweeps), where
irpo.cli.conf_dir and sweeps_dir look for them in an installed wheel."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["irpo*"]) + ["irpo.conf", "irpo.sweeps"],
    package_dir={"irpo.conf": "conf", "irpo.sweeps": "sweeps"},
    package_data={"irpo": ["models/tiny_m0/*", "models/mini_m0/*"], "irpo.conf": ["*.yaml", "*/*.yaml", "*/*/*.yaml"], "irpo.sweeps": ["*.yaml"]},
)
