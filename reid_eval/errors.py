"""Errors that the command line reports as one line, without a traceback."""


class ReidEvalError(Exception):
    """A problem with the user's input (a file, a folder, an option).

    The message must name the file or option at fault and read well as a
    single line after ``Error: ``.
    """
