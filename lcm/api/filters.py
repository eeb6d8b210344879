"""The API's filter backend: the FilterSets shared with the pages, with 400s for every bad value.

A boolean filter accepts true/false/1/0 only (django-filter would ignore anything else).

Date-times in query strings are moved to UTC before they reach the database: an ISO 8601
offset beyond PostgreSQL's ±15:59 (Python accepts up to ±23:59) would otherwise fail in
the query (a 500) instead of filtering.
"""

from datetime import UTC, datetime

from django_filters import BooleanFilter
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

# What a boolean filter accepts; django-filter would read anything else as "no filter".
BOOLEAN_VALUES = {"true", "false", "1", "0"}


class FilterBackend(DjangoFilterBackend):
    """DjangoFilterBackend that rejects bad values with 400 `{filter: [messages]}` and normalises date-times."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        for name, filter_ in filterset.filters.items():
            raw = request.query_params.get(name)
            if isinstance(filter_, BooleanFilter) and raw not in (None, "") and raw.lower() not in BOOLEAN_VALUES:
                raise ValidationError({name: ["must be true or false"]})
        if not filterset.is_valid():
            # The form's rendered messages, not `utils.translate_validation`, which re-applies `%`
            # formatting and fails on a message that quotes user input containing `%`.
            raise ValidationError({name.rstrip("_"): list(errors) for name, errors in filterset.errors.items()})
        cleaned = filterset.form.cleaned_data
        for name, value in cleaned.items():
            if isinstance(value, datetime) and value.tzinfo is not None:
                try:
                    cleaned[name] = value.astimezone(UTC)
                except (OverflowError, ValueError):
                    raise ValidationError({name.rstrip("_"): ["is out of the supported date range"]}) from None
        return filterset.qs
