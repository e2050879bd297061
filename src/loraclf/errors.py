"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """A problem with the user's input, files or environment.

    The CLI prints its message on one line and exits with code 2, without a
    traceback. The message must say what is wrong and where (file, row,
    column, value, config key).
    """
