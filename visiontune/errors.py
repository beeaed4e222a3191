"""The one error type the command line turns into a one-line message and exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input: a spec file, a flag, a dataset. The message is one line that names
    the file, the key and the offending value, so the user can fix it without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


class SweepInterrupted(Exception):
    """The sweep stopped before every trial finished (Ctrl-C); its state is saved for --resume."""
