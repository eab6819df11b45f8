"""Map service exceptions to API answers: validation 400, permission 403, conflicts 409.

A lock conflict is 409 with the holding task; the apps register their own conflict errors
(``panel.registry.register_conflict``), answered 409 with their message.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from panel.locks import LockConflict
from panel.registry import conflict_errors

from .serializers import TaskSerializer


def validation_detail(exc: DjangoValidationError) -> dict:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for m in msgs] for field, msgs in exc.message_dict.items()}
    return {"non_field_errors": [str(m) for m in exc.messages]}


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        return Response(validation_detail(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, tuple(conflict_errors.values())):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, LockConflict):
        body = {"detail": str(exc)}
        if exc.holder is not None:
            body["task"] = TaskSerializer(exc.holder, context=context).data
        return Response(body, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)
