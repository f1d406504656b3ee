"""The study's one exception: a problem with the user's input or environment, reported as one clear line.

Its own module, importing nothing, so that every other module (the run folder's lock included) can raise it
without importing the module that owns the run folder.
"""


class StudyError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""
