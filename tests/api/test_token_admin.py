"""The admin page for API tokens: create (key shown once, in a message), list, revoke."""

import pytest
from django.contrib.messages import get_messages

from lcm.api.tokens import hash_key, token_create
from lcm.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("token-admin", "a@example.com", "pw")
    client.force_login(superuser)
    return client


def test_add_shows_the_key_once(admin_client, instructor):
    response = admin_client.post(
        "/admin/lcm/apitoken/add/", {"user": instructor.pk, "name": "ci", "expires_days": "7"}, follow=True
    )
    assert response.status_code == 200
    token = ApiToken.objects.get()
    texts = [str(m) for m in get_messages(response.wsgi_request)] or [m.message for m in response.context["messages"]]
    shown = [t for t in texts if t.startswith("New API token")]
    assert len(shown) == 1
    key = shown[0].split(": ", 1)[1].split(" ")[0]
    assert hash_key(key) == token.key_hash and token.expires_at is not None
    # Nowhere to be seen afterwards.
    page = admin_client.get(f"/admin/lcm/apitoken/{token.pk}/change/").content.decode()
    assert key not in page and token.key_hash not in page
    assert key not in admin_client.get("/admin/lcm/apitoken/").content.decode()


def test_add_form_errors(admin_client, instructor):
    response = admin_client.post("/admin/lcm/apitoken/add/", {"user": instructor.pk, "expires_days": "0"})
    assert response.status_code == 200
    assert "expires_days" in response.context["adminform"].form.errors
    assert not ApiToken.objects.exists()


def test_revoke_action(admin_client, instructor):
    created = token_create(instructor, actor="test")
    data = {"action": "revoke_tokens", "_selected_action": [created.token.pk]}
    asked = admin_client.post("/admin/lcm/apitoken/", data)
    assert asked.status_code == 200 and "Every client using them is refused" in asked.content.decode()
    created.token.refresh_from_db()
    assert not created.token.revoked  # asked first: nothing done yet
    response = admin_client.post("/admin/lcm/apitoken/", data | {"post": "yes"}, follow=True)
    assert response.status_code == 200
    created.token.refresh_from_db()
    assert created.token.revoked


def test_tokens_are_not_editable_nor_deletable(admin_client, instructor):
    created = token_create(instructor, actor="test")
    admin_client.post(f"/admin/lcm/apitoken/{created.token.pk}/change/", {"name": "renamed"})
    created.token.refresh_from_db()
    assert created.token.name == ""
    assert admin_client.post(f"/admin/lcm/apitoken/{created.token.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ApiToken.objects.filter(pk=created.token.pk).exists()
