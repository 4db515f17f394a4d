"""The one exception type kd raises for problems a user can fix (bad input, missing files)."""


class KDError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""
