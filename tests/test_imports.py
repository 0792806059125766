"""Every module imports: the cheapest bug to catch."""

import importlib
import pkgutil

import pytest

import irpo

MODULES = sorted(m.name for m in pkgutil.walk_packages(irpo.__path__, "irpo."))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
