"""A fresh clone runs `manage.py migrate` with nothing set: the embedded SQLite default makes its own
directory (issue 18; `scripts/run` is not the only way in)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_migrate_on_the_embedded_default_creates_the_var_directory(tmp_path):
    var_dir = tmp_path / "fresh-clone" / "var"  # absent, parent absent too: as after `git clone`
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env["LCM_VAR_DIR"] = str(var_dir)
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (var_dir / "lcm.sqlite3").is_file()
