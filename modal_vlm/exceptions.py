"""The exceptions modal-vlm raises: one family under :class:`ModalVLMError`.

Every error the library raises on purpose derives from :class:`ModalVLMError`, so a caller can
catch the library's refusals in one ``except`` while programming errors (a bug, a missing
file from the operating system) still surface as themselves. Each class also derives from the
built-in exception a Python user would expect for that failure (``ValueError`` for a bad value,
``KeyError`` for a missing key...), so code written against the built-ins keeps working.

Examples
--------
>>> from modal_vlm.exceptions import InvalidParameterError, ModalVLMError
>>> issubclass(InvalidParameterError, (ModalVLMError, ValueError, TypeError))
True
"""


class ModalVLMError(Exception):
    """Base class of every exception modal-vlm raises on purpose."""


class InvalidParameterError(ModalVLMError, ValueError, TypeError):
    """A parameter or argument of the wrong type or outside its valid values.

    Both a ``ValueError`` and a ``TypeError`` (as scikit-learn's error of the same name), so
    that code catching either keeps working. The message names the parameter, what it must be
    and the value given: ``"<name> must be <what>, got <value>."``.
    """


class BackboneUnavailableError(ModalVLMError, RuntimeError):
    """A backbone that cannot be created here (weights that cannot be downloaded, a missing
    optional package); the message says what to install or where to put the weights."""


class NotInCacheError(ModalVLMError, KeyError):
    """Images asked of an embedding cache that does not hold them."""

    def __str__(self):  # KeyError quotes its message; this one is a sentence
        return str(self.args[0]) if self.args else ""


class DamagedShard(ModalVLMError, ValueError):
    """A cache shard that cannot be read as keys and finite embeddings of one width."""


class RunDirectoryError(ModalVLMError, RuntimeError):
    """The run directory holds another or a finished run, or is damaged."""


class LabelConflict(ModalVLMError, ValueError):
    """A label that does not fit the current state (a stale page, a finished batch)."""


class UnknownImage(ModalVLMError, LookupError):
    """An image id that the store does not hold."""


class LabelStudioError(ModalVLMError, RuntimeError):
    """Label Studio refused a request or could not be reached (the message says which)."""
