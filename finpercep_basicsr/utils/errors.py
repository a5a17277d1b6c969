"""Errors caused by the user's input (files, options, checkpoints), reported without a traceback."""


class UserInputError(ValueError):
    """Bad input the user can fix; the message names the file or option key. Entry points exit 2."""
