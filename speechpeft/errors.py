"""Errors a user can act on. The CLI prints their message on one line, without a traceback."""


class SpeechPeftError(Exception):
    """Base class: the message alone must tell the user what to fix (file, key, value)."""


class TargetError(SpeechPeftError):
    """An injection pattern matched no module, or matched a module that cannot be wrapped."""


class BaseMismatchError(SpeechPeftError):
    """An adapter was loaded onto a model other than the one it was made for."""


class AdapterFileError(SpeechPeftError):
    """An adapter directory is missing, unreadable, truncated or tampered with."""


class AdapterModeError(SpeechPeftError):
    """Training was asked for in adapter mode, but the base model is not frozen."""
