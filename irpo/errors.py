"""Errors a user causes (bad data, an empty iteration, a bad command line); reported as one
line by the CLI."""

import argparse
import sys
from typing import NoReturn


class UserError(RuntimeError):
    """A problem with the user's input or setup; the message says what and what to change."""


class ConfigError(ValueError):
    """A config value that composes but cannot run; the message names the key."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser for irpo's other entry points (irpo.report, irpo.dashboard): a
    usage error is one line and exit code 2, as for `python -m irpo`, not argparse's usage
    block."""

    def error(self, message: str) -> NoReturn:
        print(f"irpo: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
