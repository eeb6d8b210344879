"""A YAML fuzz over definition create and update (SPEC §12, issue 18): generated lab YAML — aliases and alias
bombs, huge and 5,000-digit integers, dates, `!!binary`, `!!set`, `.nan`/`.inf`, escaped lone surrogates and NULs,
deep nesting, odd tags — through the REST API (POST, PATCH) and the service. Nothing answers a 500, a refusal
is a ValidationError or a 400 naming a field, and whatever was stored keeps every later read working: the
definitions list and detail in the API, the definitions page and a definition's page, the admin's list and
change page."""

import itertools
import json

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions.definitions import definition_create
from sessions.models import LabletDefinition
from tests.api.conftest import client_for
from tests.factories import DEMO_LAB

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

_names = itertools.count(1)

SPECIAL = [
    "&a [1, 2]",
    "*undefined_alias",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [{a: 1}]",
    "!!python/object/apply:os.system ['true']",
    "!!timestamp 2024-01-01",
    ".nan",
    "-.inf",
    ".Inf",
    "2024-01-01",
    "9999-12-31T23:59:59Z",
    "0001-01-01",
    "0x" + "f" * 40,
    "0o777777777777777777777777",
    "1e400",
    "1" * 5000,
    "-" + "9" * 25,
    "9223372036854775808",
    '"\\ud800"',
    '"a\\udfffb"',
    '"\\x00"',
    '"\\U0010FFFF"',
    '"\\u202Eevil"',
    "~",
    "null",
    "yes",
    "!custom tag",
    "{a: 1, a: 2}",
    "? [complex, key]\n  : value",
    "|\n    block\n    text",
    "'\\x1b[31m'",
]

ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar for `text` (JSON's escapes, which YAML reads: lone surrogates stay escapes)."""
    return json.dumps(text)


scalars = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(min_value=-(10**60), max_value=10**60).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda n: "7" * n),
    st.text(max_size=60).map(_quoted),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=30).map(_quoted),
    st.integers(min_value=1, max_value=1500).map(lambda n: "[" * n + "1" + "]" * n),
    st.integers(min_value=1, max_value=400).map(lambda n: "{a: " * n + "1" + "}" * n),
)


def _in_label(value: str) -> str:
    return DEMO_LAB.replace("label: edge-router", f"label: {value}", 1)


def _in_title(value: str) -> str:
    return DEMO_LAB.replace("title: LCM demo - router and desktop", f"title: {value}", 1)


def _new_key(value: str) -> str:
    return DEMO_LAB.replace("annotations: []", f"annotations: []\nfuzzed: {value}", 1)


def _anchored(value: str) -> str:
    return DEMO_LAB.replace("annotations: []", f"annotations: []\nx-a: &fz {value}\nx-b: *fz", 1)


documents = st.one_of(
    st.tuples(st.sampled_from([_in_label, _in_title, _new_key, _anchored]), scalars).map(lambda t: t[0](t[1])),
    scalars,
    st.just(ALIAS_BOMB),
    st.just(DEMO_LAB + "\n" + ALIAS_BOMB),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


@pytest.fixture
def readers(admin_user):
    pages = Client()
    pages.force_login(admin_user)
    return client_for(admin_user), pages


def _all_reads_work(api, pages) -> None:
    listing = api.get("/api/v1/definitions/?page_size=500")
    assert listing.status_code == 200, listing.content[:500]
    assert pages.get("/definitions/").status_code == 200
    assert pages.get("/admin/lablets/labletdefinition/").status_code == 200
    for pk in LabletDefinition.objects.values_list("pk", flat=True):
        assert api.get(f"/api/v1/definitions/{pk}/").status_code == 200, pk
        assert pages.get(f"/definitions/{pk}/").status_code == 200, pk
        assert pages.get(f"/admin/lablets/labletdefinition/{pk}/change/").status_code == 200, pk


def _refused_or_stored(response) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and body, body


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(document=documents)
def test_generated_yaml_never_gives_a_500_nor_stores_what_breaks_a_read(readers, document):
    api, pages = readers
    name = f"fuzz-{next(_names)}"
    _refused_or_stored(api.post("/api/v1/definitions/", {"name": name, "lab_yaml": document}, format="json"))
    try:
        definition_create(actor="fuzz", name=f"{name}-service", version="1.0.0", lab_yaml=document)
    except ValidationError as refused:
        assert refused.message_dict or refused.messages
    base = LabletDefinition.objects.filter(name="fuzz-base").first()
    if base is None:
        base = definition_create(actor="fuzz", name="fuzz-base", version="1.0.0", lab_yaml=DEMO_LAB)
    _refused_or_stored(api.patch(f"/api/v1/definitions/{base.pk}/", {"lab_yaml": document}, format="json"))
    _all_reads_work(api, pages)
