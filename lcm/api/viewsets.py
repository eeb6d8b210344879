"""What every app's ViewSets share: filters on lists only, paginated child lists, request bodies and reasons."""

from rest_framework import viewsets
from rest_framework.response import Response

from lcm.api.serializers import ReasonSerializer


class ApiViewSet(viewsets.GenericViewSet):
    """Base of LCM's ViewSets.

    `conflict_actions` names the actions that can answer 409, `query_parameter_actions` the
    non-list actions that read query parameters and `checks_roles` whether 403 can happen
    (they feed the OpenAPI error responses, see `lcm.api.schema`).
    """

    conflict_actions: tuple[str, ...] = ()
    query_parameter_actions: tuple[str, ...] = ()
    # False where credentials are the only check (no role can be missing, so never 403).
    checks_roles = True

    def filter_queryset(self, queryset):
        # Filters belong to the list; a detail route ignores list query parameters.
        if self.action != "list":
            return queryset
        return super().filter_queryset(queryset)

    def paginated_response(self, queryset, serializer_class, **context) -> Response:
        """A DRF page of `queryset` rendered with `serializer_class`."""
        page = self.paginate_queryset(queryset)
        context = {**self.get_serializer_context(), **context}
        return self.get_paginated_response(serializer_class(page, many=True, context=context).data)

    def request_reason(self) -> str:
        """The optional `reason` of a DELETE: from the body, else from `?reason=` (400 when too long)."""
        data = self.request.data if isinstance(self.request.data, dict) else {}
        if "reason" not in data and "reason" in self.request.query_params:
            data = {"reason": self.request.query_params["reason"]}
        return self.read_body(ReasonSerializer, data=data).get("reason", "")

    def read_body(self, serializer_class, *, data=None) -> dict:
        """Validate the request body (400 naming each bad field) and return the clean values."""
        serializer = serializer_class(data=self.request.data if data is None else data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data
