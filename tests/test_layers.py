"""The package layout's rules (docs/design.md): each stage imports only the stages below it, no import cycles,
loraclf imports inside functions only where start-up speed asks for them, no side effects at import."""

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "loraclf"
# Commands import their stage when they run, so `loraclf --help` and the lazy `loraclf.X` names stay fast;
# the Classifier imports its torch side only for a folder that needs torch (an ONNX export does not).
LAZY_ALLOWED = {"cli.py", "api.py", "__init__.py", "inference/classifier.py"}


def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """pyproject.toml's import-linter contracts, checked on the package found under `source_root`."""
    program = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"})


def test_the_import_contracts_hold():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def test_the_contracts_catch_an_import_upwards_and_a_cycle(tmp_path):
    """A copy of the package with data importing training (a lower stage a higher one, and so a cycle
    between the packages) breaks both contracts."""
    copy = tmp_path / "loraclf"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    tables = copy / "data" / "tables.py"
    tables.write_text(tables.read_text(encoding="utf-8") + "\n\ndef _late():\n    from loraclf.training import loop\n",
                      encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "0 kept, 2 broken" in result.stdout, result.stdout[-3000:]


def test_function_level_imports_count_and_stay_in_the_entry_points():
    graph = grimp.build_graph("loraclf", cache_dir=None)
    # cli imports the training stage only inside cmd_train: the graph (and so the contracts) sees it.
    assert "loraclf.training.recipe" in graph.find_modules_directly_imported_by("loraclf.cli")
    lazy = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() in LAZY_ALLOWED:
            continue
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lazy += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for node in ast.walk(function)
                         if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loraclf")]
    assert not lazy, f"loraclf imported inside a function (import it at the top): {lazy}"


def test_package_inits_hold_only_their_docstring():
    for init in PACKAGE.glob("*/__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"{init}: only a docstring, no imports"


def test_importing_loraclf_changes_nothing_in_transformers(tiny_model_dir):
    """The fast attention kernel is registered where a model is built, not when a module is imported."""
    program = textwrap.dedent("""
        import importlib, pkgutil, loraclf
        from transformers import AttentionInterface
        for module in pkgutil.walk_packages(loraclf.__path__, "loraclf."):
            if module.name not in ("loraclf.deploy.serve", "loraclf.tuning.search", "loraclf.__main__"):
                importlib.import_module(module.name)
        assert "loraclf_fast" not in AttentionInterface._global_mapping, "registered at import"
        from loraclf.config.schema import ModelConfig
        from loraclf.model.build import build_base
        build_base(ModelConfig(name_or_path=%r, init="random"), ["a", "b"])
        assert "loraclf_fast" in AttentionInterface._global_mapping, "not registered when the model is built"
    """) % str(tiny_model_dir)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_old_entry_points_still_answer():
    """Model cards written before the layout import loraclf.pooling.apply_pooling; docs name
    `python -m loraclf.reference` and `python -m loraclf.cli`."""
    from loraclf import pooling
    from loraclf.model import pooling as model_pooling

    assert pooling.apply_pooling is model_pooling.apply_pooling
    reference = subprocess.run([sys.executable, "-m", "loraclf.reference"], capture_output=True, text=True)
    assert reference.stdout == (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    version = subprocess.run([sys.executable, "-m", "loraclf.cli", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("loraclf ")
