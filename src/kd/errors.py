"""The one exception type kd raises for problems a user can fix (bad input, missing files), and how
an error is told in one line."""


class KDError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""


def one_line(err: Exception) -> str:
    """An error's message on one line; an OSError's with the file it concerns."""
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        text = str(err)
    return " ".join(text.splitlines())
