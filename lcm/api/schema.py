"""OpenAPI glue (drf-spectacular): tags per app, the error responses every operation documents, the router.

Every operation documents 401 and 403 (all routes need credentials and a role; the internal
API, whose key is its only check, has no 403); 400 when
it takes a body or query parameters; 404 when its path names an object or it is a
paginated list; 409 when the view lists the action in `conflict_actions`.
"""

import copy

from drf_spectacular.contrib.django_filters import DjangoFilterExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.types import OpenApiTypes
from rest_framework.routers import DynamicRoute, SimpleRouter

from lcm.filters import StatusListFilter

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": "`{field: [messages]}`; errors not tied to one field are under `non_field_errors`.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
CONFLICT_SCHEMA = {
    "type": "object",
    "description": (
        "`code` is `invalid_transition` for a refused state change (with `current_status` and the `allowed` "
        "targets) or `conflict` for a clash with existing data (with `existing_id`, e.g. the session a "
        "reservation is already booked as), or `capacity` when the fleet cannot hold a booking (with the capacity "
        "check's verdict under `capacity`)."
    ),
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": ["invalid_transition", "conflict", "capacity"]},
        "current_status": {"type": "string"},
        "allowed": {"type": "array", "items": {"type": "string"}},
        "existing_id": {"type": "string", "nullable": True},
        "field": {"type": "string", "nullable": True},
        "capacity": {
            "type": "object",
            "properties": {
                "fits": {"type": "boolean"},
                "needed": {"type": "object", "additionalProperties": {"type": "integer"}},
                "available": {"type": "object", "additionalProperties": {"type": "integer"}},
                "shortfall": {"type": "object", "additionalProperties": {"type": "integer"}},
                "reasons": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "required": ["detail", "code"],
}

_ERRORS = {
    "400": ("ValidationError", VALIDATION_ERROR_SCHEMA, "Bad input: the fields named and what is wrong with them."),
    "401": ("Error", ERROR_SCHEMA, "Missing or invalid credentials."),
    "403": ("Error", ERROR_SCHEMA, "The credentials lack the role this needs."),
    "404": ("Error", ERROR_SCHEMA, "No such object (or page)."),
    "409": ("Conflict", CONFLICT_SCHEMA, "Refused: the object's state does not allow it, or it clashes with data."),
}


class LcmAutoSchema(AutoSchema):
    """Tags by app (`internal` for the internal API) and the documented error responses."""

    def get_tags(self) -> list[str]:
        tokens = self._tokenize_path()
        if tokens and tokens[0] == "internal":
            return ["internal"]
        if len(tokens) > 1 and tokens[0] == "v1":
            return [tokens[1]]
        return tokens[:1]

    def _error_codes(self) -> list[str]:
        action = self._action()
        is_list = self.method == "GET" and self._is_list_view()
        takes_input = self.method in ("POST", "PUT", "PATCH") or action in getattr(
            self.view, "query_parameter_actions", ()
        )
        codes = ["401", "403"] if getattr(self.view, "checks_roles", True) else ["401"]
        if takes_input or is_list:
            codes.append("400")
        if "{" in self.path or is_list:
            codes.append("404")
        if action in getattr(self.view, "conflict_actions", ()):
            codes.append("409")
        return codes

    def _action(self) -> str | None:
        return getattr(self.view, "action", None) or self.method.lower()

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code in responses:
                continue
            name, schema, description = _ERRORS[code]
            component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, schema=schema, object=name)
            self.registry.register_on_missing(component)
            responses[code] = {
                "content": {"application/json": {"schema": component.ref}},
                "description": description,
            }
        return responses


class ApiRouter(SimpleRouter):
    """Collections and objects end in `/` (`/sessions/`, `/sessions/{id}/`); verbs do not (`/sessions/{id}/extend`).

    That is how SPEC §5.1 writes them.
    """

    routes = [
        route._replace(url=route.url.replace("{trailing_slash}", "")) if isinstance(route, DynamicRoute) else route
        for route in SimpleRouter.routes
    ]


class CommaListFilterExtension(DjangoFilterExtension):
    """django-filter parameters, with the comma-list status filters (`sessions.filters.StatusListFilter`) as strings.

    Their choices are plain values, not `(value, label)` pairs, which the stock extension expects.
    """

    priority = 1

    def _get_explicit_filter_choices(self, filter_field):
        if isinstance(filter_field, StatusListFilter):
            return None
        return super()._get_explicit_filter_choices(filter_field)

    def resolve_filter_field(self, auto_schema, model, filterset_class, field_name, filter_field):
        if isinstance(filter_field, StatusListFilter):
            filter_field = copy.copy(filter_field)
            filter_field._spectacular_annotation = {"field": OpenApiTypes.STR}
        return super().resolve_filter_field(auto_schema, model, filterset_class, field_name, filter_field)


def openapi_document() -> dict:
    """The OpenAPI document `/api/schema/` serves, as plain JSON data (no request, no database)."""
    import json

    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated, renderer_context={}))
