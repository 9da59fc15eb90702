"""The base of every error that is the user's to fix (a missing file, bad input), shown without a traceback."""


class HairclipError(Exception):
    """An error with a message written for the person running the tool."""
