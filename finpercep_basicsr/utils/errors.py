"""Errors caused by the user's input (files, options, checkpoints), reported without a traceback."""


class UserInputError(ValueError):
    """Bad input the user can fix; the message names the file or option key. Entry points exit 2."""


EXIT_BAD_INPUT = 2


def exit_code_for_user_errors(fn, *args, **kwargs):
    """Call ``fn``; bad input (``UserInputError``, ``FileNotFoundError``) becomes one line on stderr and 2.

    Returns:
        int: The exit code: ``fn``'s return value, 0 when it returns None, 2 for bad input.
    """
    import sys
    try:
        return fn(*args, **kwargs) or 0
    except (UserInputError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return EXIT_BAD_INPUT
