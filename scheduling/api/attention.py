"""`GET /api/v1/attention/` (SPEC §11): the needs-attention list, `{kind, severity, object, reason, since}` each.

A DRF page without further pages: the list is bounded (`scheduling.attention.PER_KIND` per kind) and read in a
constant number of queries.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from lcm.api.permissions import IsInstructor
from scheduling.attention import SEVERITIES, attention_items


class AttentionObjectSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["session", "worker", "loop"])
    id = serializers.CharField()
    name = serializers.CharField()
    url = serializers.CharField(help_text="The object's page.")


class AttentionItemSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=[
            "unplaceable", "drift", "session_failed", "grading_faulted", "worker_failed", "worker_unreachable",
            "drain_deadline", "stale_loop",
        ]
    )  # fmt: skip
    severity = serializers.ChoiceField(choices=list(SEVERITIES))
    object = AttentionObjectSerializer()
    reason = serializers.CharField()
    since = serializers.DateTimeField(allow_null=True)


class AttentionPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = AttentionItemSerializer(many=True)


class AttentionView(APIView):
    """What needs a person now, most severe first (instructors and admins)."""

    permission_classes = [IsInstructor]

    @extend_schema(summary="Needs attention", responses={200: AttentionPageSerializer})
    def get(self, request):
        items = [item.as_dict() for item in attention_items()]
        body = {"count": len(items), "next": None, "previous": None, "results": items}
        return Response(AttentionPageSerializer(body).data)
