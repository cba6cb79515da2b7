"""The one exception type a user sees as a message rather than a traceback."""


class LookalikeError(Exception):
    """A problem with the user's input or environment, explained in one line with the fix.

    The CLI prints ``str(error)`` and exits with status 2; library callers can catch it.
    """
