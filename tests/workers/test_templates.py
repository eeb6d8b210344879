"""Worker templates: seeded on migrate (create-only), overwritten only by an explicit sync."""

import pytest
from django.core.exceptions import ValidationError

from workers.models import WorkerTemplate
from workers.template_services import load_template_file, templates_seed

pytestmark = pytest.mark.django_db


def test_migrate_seeded_every_template_of_the_file():
    names = {entry["name"] for entry in load_template_file()}
    assert names <= set(WorkerTemplate.objects.values_list("name", flat=True))


def test_seeding_is_create_only_and_sync_overwrites():
    template = WorkerTemplate.objects.get(name="cml-small")
    template.cpu_cores = 99
    template.save()
    WorkerTemplate.objects.filter(name="cml-large").delete()

    result = templates_seed()  # what `migrate` runs
    assert result["created"] == ["cml-large"]
    template.refresh_from_db()
    assert template.cpu_cores == 99  # the edit survives

    result = templates_seed(overwrite=True)  # what `templates_sync` runs
    assert result["updated"] == ["cml-small"]
    template.refresh_from_db()
    assert template.cpu_cores == 8


def test_a_bad_file_names_the_entry_and_field(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("templates:\n  - name: x\n    instance_type: m5\n    ami_name_pattern: a\n    cpu_cores: -1\n")
    with pytest.raises(ValidationError) as excinfo:
        templates_seed(path)
    assert "templates[0].cpu_cores" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        templates_seed(tmp_path / "missing.yaml")
    assert "file" in excinfo.value.message_dict
