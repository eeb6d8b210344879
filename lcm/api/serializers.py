"""Request bodies shared by every app's API."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

MAX_REASON = 2000


def reason_field(**kwargs):
    """An optional free-text reason, recorded in the history of what it changes."""
    return serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_REASON, help_text="Recorded in the history.", **kwargs
    )


class ReasonSerializer(serializers.Serializer):
    """An optional body carrying only a reason."""

    reason = reason_field()


# `?reason=` of the DELETE routes (which may also take it in the body).
REASON_PARAMETER = OpenApiParameter("reason", OpenApiTypes.STR, description="Recorded in the history.")
