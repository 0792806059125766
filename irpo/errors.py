"""Errors a user causes (bad data, an empty iteration); reported as one line by the CLI."""


class UserError(RuntimeError):
    """A problem with the user's input or setup; the message says what and what to change."""
