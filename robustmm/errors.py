"""The one exception type a user can cause: its message is a single clear sentence."""


class RobustMMError(Exception):
    """Bad input a user can fix (path, name, value, file content).

    The CLI prints the message and exits with code 2, without a traceback.
    """
