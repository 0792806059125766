"""Every module imports: the cheapest bug to catch."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import irpo

MODULES = sorted(m.name for m in pkgutil.walk_packages(irpo.__path__, "irpo."))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)


def test_the_loop_module_loads_no_torch():
    """`python -m irpo` imports the loop before it validates the config: a config error then
    answers in about a second, not after torch's and Lightning's 4-6 s of imports."""
    probe = "import sys, irpo.loop; print(sorted({'torch', 'lightning', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
