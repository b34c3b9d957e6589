"""Errors about the user's input. The CLI prints them as one line and exits with status 2."""


class UserInputError(ValueError):
    """Bad input (a file, row, column or option); the message names it and says what to do."""


class DataError(UserInputError):
    """Bad data: a missing or unreadable file, a bad row or column."""


class ImageReadError(DataError):
    """An image or mask file is missing, empty or cannot be decoded."""


class MissingFileError(UserInputError, FileNotFoundError):
    """A file named by an option does not exist."""
