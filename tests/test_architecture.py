"""Meta-tests of the product tree's architecture (ARCHITECTURE.md): fast, no database, no services.

- every product module is named (itself or through a parent package) in a layer of `.importlinter`'s
  layers contract, so no new module escapes it (the kernel's own modules excepted: "the kernel knows no
  app" contract covers them);
- `lint-imports` keeps every contract;
- no function imports first-party code unless it says why ("import" in a comment over or in its import
  block, or in its docstring);
- `scripts/check-structure` finds no module over 600 lines and no function over 60.
"""

import ast
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("lcm", "sessions", "workers", "scheduling", "grading")
FIRST_PARTY = {*PRODUCT, "simulators"}
STRICT = os.environ.get("LCM_TEST_STRICT") == "1"


def _contracts() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config


def _layer_names() -> set[str]:
    """Every module named in the layers contract (layers one a line, siblings separated by ` : `)."""
    raw = _contracts()["importlinter:contract:layers"]["layers"]
    return {name.strip() for line in raw.splitlines() for name in line.split(" : ") if name.strip()}


def _kernel_wiring() -> set[str]:
    """The parts of `lcm` allowed to name apps (the sources of the kernel contract's ignored imports): not kernel."""
    raw = _contracts()["importlinter:contract:kernel"]["ignore_imports"]
    sources = {line.split("->")[0].strip() for line in raw.splitlines() if "->" in line}
    return {source.removesuffix(".**").removesuffix(".*") for source in sources}


def _product_files() -> list[Path]:
    return [
        path
        for top in PRODUCT
        for path in sorted((ROOT / top).rglob("*.py"))
        if "migrations" not in path.parts and "tests" not in path.parts
    ]


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _named_in(module: str, names: set[str]) -> bool:
    """`module` is one of `names`, or inside a package that is."""
    return any(module == name or module.startswith(name + ".") for name in names)


def test_the_layer_parsing_reads_the_contract():
    layers = _layer_names()
    assert {"lcm.urls", "workers.reconcilers", "sessions.reconcilers", "grading.reconcilers", "lcm.fsm"} <= layers
    assert _kernel_wiring() >= {"lcm.api.urls", "lcm.tools", "lcm.management.commands"}


def test_every_product_module_is_in_a_layer_of_the_contract():
    layers, wiring = _layer_names(), _kernel_wiring()
    modules = [_dotted(path) for path in _product_files() if path.name != "__init__.py"]
    assert modules, "no product module found"
    checked = [m for m in modules if not m.startswith("lcm.") or _named_in(m, wiring)]
    missing = sorted(m for m in checked if not _named_in(m, layers))
    assert not missing, f"not named in any layer of .importlinter's layers contract: {', '.join(missing)}"


def _lint_imports() -> str | None:
    """`.venv/bin/lint-imports` of the checkout, else the one beside the running interpreter, else on PATH."""
    for candidate in (ROOT / ".venv" / "bin" / "lint-imports", Path(sys.executable).parent / "lint-imports"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("lint-imports")


def test_lint_imports_keeps_every_contract():
    executable = _lint_imports()
    if executable is None:
        message = "lint-imports is not installed (import-linter, requirements-dev.txt): run scripts/bootstrap dev"
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [executable, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"lint-imports failed:\n{done.stdout}\n{done.stderr}"
    assert "0 broken" in done.stdout


def _first_party(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in FIRST_PARTY
    return any(alias.name.split(".")[0] in FIRST_PARTY for alias in node.names)


def _import_blocks(body: list[ast.stmt]):
    """Runs of consecutive import statements in one statement list, and the lists nested in it (not in
    nested functions or classes, which are checked on their own)."""
    block: list[ast.stmt] = []
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            block.append(statement)
            continue
        if block:
            yield block
            block = []
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            nested = getattr(statement, field, None)
            if isinstance(nested, list) and nested and isinstance(nested[0], ast.stmt | ast.excepthandler):
                if field == "handlers":
                    for handler in nested:
                        yield from _import_blocks(handler.body)
                else:
                    yield from _import_blocks(nested)
    if block:
        yield block


def _says_why(lines: list[str], block: list[ast.stmt]) -> bool:
    """A comment line directly above the block, or a comment within it, mentions "import"."""
    first, last = block[0].lineno - 1, block[-1].end_lineno - 1  # 0-based
    above = first - 1
    comments = []
    while above >= 0 and lines[above].strip().startswith("#"):
        comments.append(lines[above])
        above -= 1
    comments += [line[line.index("#") :] for line in lines[first : last + 1] if "#" in line]
    return any("import" in comment.lower() for comment in comments)


def unexplained_function_imports(path: Path) -> list[str]:
    """Functions importing first-party code with no word on why: "import" in their docstring, or in a comment
    directly above (or within) one of their import blocks (one comment may explain all the function's imports)."""
    text = path.read_text()
    lines = text.splitlines()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for function in ast.walk(ast.parse(text)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        blocks = list(_import_blocks(function.body))
        first_party = [block for block in blocks if any(_first_party(node) for node in block)]
        if not first_party or "import" in (ast.get_docstring(function) or "").lower():
            continue
        if not any(_says_why(lines, block) for block in blocks):
            found.append(f"{shown}:{first_party[0][0].lineno}: {function.name}()")
    return found


def test_the_function_import_check_sees_what_it_should(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def bare():\n"
        "    from django.conf import settings\n"
        "\n"
        "    from lcm import loops\n"
        "\n"
        "def commented():\n"
        "    # Imported here: the app registry is not ready at module level.\n"
        "    from sessions import models\n"
        "\n"
        "def documented():\n"
        '    """Imports the models late (the registry)."""\n'
        "    import workers.models\n"
        "\n"
        "def third_party_only():\n"
        "    import json\n"
        "\n"
        "def nested():\n"
        "    if True:\n"
        "        from . import x\n"
        "\n"
        "def explained_once():\n"
        "    # Imported here: Django must be set up first.\n"
        "    import django\n"
        "\n"
        "    django.setup()\n"
        "    from lcm.loops import LOOPS\n"
    )
    problems = [line.split(": ", 1)[1] for line in unexplained_function_imports(sample)]
    assert problems == ["bare()", "nested()"]


def test_no_unexplained_function_level_first_party_import_in_product_code():
    found = [problem for path in _product_files() for problem in unexplained_function_imports(path)]
    assert not found, (
        "first-party imports inside functions without a comment (or docstring) saying why they are not at "
        "module level:\n" + "\n".join(found)
    )


def test_check_structure_finds_no_module_or_function_too_long():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check-structure")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"scripts/check-structure:\n{done.stdout}{done.stderr}"
