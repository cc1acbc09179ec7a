"""The one exception type for mistakes a user can fix.

Every module may raise `UserError`; the CLI turns it into a short message and exit code 2. Anything
else that escapes is a bug in ossft and keeps its traceback. This module imports nothing from ossft,
so every module, the recipe loader included, can use it.
"""


class UserError(Exception):
    """A problem in the user's input (recipe, data, paths, flags): what, where, and how to fix it."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
