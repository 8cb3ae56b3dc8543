"""Errors that the CLI turns into one-line messages with a meaningful exit code."""


class ScmoptError(Exception):
    """A problem with the user's input or request (exit code 2 in the CLI)."""

    exit_code = 2


class CompileMismatch(ScmoptError):
    """The compiled model disagrees with the plan's simulation beyond tolerance."""

    exit_code = 3
