"""Errors that the command line reports as one line, without a traceback."""


#: The refusal of a command that needs a model and was given none (torch-free: the CLI's option uses it too).
NO_CHECKPOINT_MESSAGE = (
    "no --checkpoint given (or REID_EVAL_CHECKPOINT); write one with `reid-eval checkpoint init --out FILE` "
    "or `reid-eval checkpoint convert`"
)


class ReidEvalError(Exception):
    """A problem with the user's input (a file, a folder, an option).

    The message must name the file or option at fault and read well as a
    single line after ``Error: ``.
    """
