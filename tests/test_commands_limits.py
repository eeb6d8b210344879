"""Commands against hostile input (issue 18, SPEC §5.6): unbounded files, numbers out of range and
terminal escape codes end in one line and exit 1 with nothing changed, or print escaped text."""

import pytest

from sessions.api.serializers import MAX_LAB_YAML
from sessions.models import LabletDefinition
from tests.support.commands import fails, manage

ESCAPE = "\x1b[31m"
HUGE = "99999999999999999999"

# ---------------------------------------------------------------------------------------
# Unbounded reads
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_definition_import_refuses_an_endless_file():
    message = fails("definition_import", "/dev/zero", "--name", "endless")
    assert f"larger than {MAX_LAB_YAML}" in message
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db
def test_definition_import_refuses_a_file_just_over_the_maximum(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("#" * (MAX_LAB_YAML + 1))
    assert f"larger than {MAX_LAB_YAML}" in fails("definition_import", str(path), "--name", "big")
    assert not LabletDefinition.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_manage_py_definition_import_dev_zero_is_one_line_and_exit_1():
    result = manage("definition_import", "/dev/zero", "--name", "endless")
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("CommandError: ")
    assert not LabletDefinition.objects.exists()
