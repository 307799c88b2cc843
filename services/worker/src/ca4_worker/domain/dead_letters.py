"""Every error class a dead letter can carry, named once: the ``ca4-error-class`` header of the
letter and the ``error_class`` label of ``ca4_worker_dead_letters_total``.

The set is closed: decoding names its classes on the :class:`ca4_schemas.EventDecodeError`
family, a refusal for good is one of :data:`Refusal` (typed on
:class:`~ca4_worker.application.ports.RejectedError`), and the stages that isolate poison prefix
theirs with :data:`PoisonStage`. The worker starts the counter of every class at 0
(:mod:`ca4_worker.core.metrics`): a labelled series that first appears already at 1 is no
increase to Prometheus, so the first dead letters of a class would go unseen by
``CA4DeadLettersGrowing``.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from ca4_schemas import EventDecodeError

from ca4_worker.domain.tenancy import ERROR_EVENT_ID_CONFLICT, ERROR_FOREIGN_TENANT

ERROR_SCHEMA_INVALID: Final = "schema_invalid"
"""A well-formed event of a known version that breaks the contract."""
ERROR_UNEXPECTED: Final = "unexpected_error"
"""An error of no known kind that outlasted its tries (after the stage's prefix)."""

Refusal = Literal["document_too_large", "invalid_document", "database_rejected"]
"""Why the database refused data for good (``RejectedError.error_class``)."""
PoisonStage = Literal["store", "projection"]
"""The stages that isolate poison; their letters are ``<stage>_<refusal or unexpected_error>``."""


def staged(stage: PoisonStage, cause: str) -> str:
    """The error class of poison ``stage`` isolated for ``cause``."""
    return f"{stage}_{cause}"


def _decode_error_classes() -> list[str]:
    """The classes of :class:`~ca4_schemas.EventDecodeError` and of every subclass."""
    classes: list[str] = []
    family: list[type[EventDecodeError]] = [EventDecodeError]
    while family:
        kind = family.pop(0)
        classes.append(kind.error_class)
        family.extend(kind.__subclasses__())
    return classes


DEAD_LETTER_CLASSES: Final[tuple[str, ...]] = tuple(
    dict.fromkeys(
        [
            *_decode_error_classes(),
            ERROR_SCHEMA_INVALID,
            ERROR_FOREIGN_TENANT,
            ERROR_EVENT_ID_CONFLICT,
            *(
                staged(stage, cause)
                for stage in get_args(PoisonStage)
                for cause in (*get_args(Refusal), ERROR_UNEXPECTED)
            ),
        ]
    )
)
"""Every error class, in a stable order."""
