"""The one exception type for user errors: its message says what was wrong and how to fix it."""


class MobileNetsError(ValueError):
    """A user error (bad name, argument, file or data). The CLI prints its message and exits non-zero."""
