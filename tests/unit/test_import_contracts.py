"""The import rules of docs/architecture.md: import-linter's contracts hold, and heavy libraries load lazily."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "agents", "distill", "hive")
CONTRACTS = [
    c["name"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# Imported inside the functions that need them: an agent process, and every `hive` command, start
# without the training and tracking stacks (`--help` stays fast, and agents need neither installed).
LAZY = ("deepspeed", "mlflow")


def lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", str(config)],
        cwd=root,
        # Wide enough that no contract's line wraps.
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def verdicts(report: str) -> dict[str, str]:
    """Contract name -> KEPT or BROKEN, from lint-imports' report."""
    found = re.findall(r"^(.+?) (KEPT|BROKEN)(?: \(\d+ ignored imports?\))?$", report, flags=re.M)
    return dict(found)


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT, ROOT / "pyproject.toml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result.stdout) == dict.fromkeys(CONTRACTS, "KEPT")


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("streams/leak.py", "from hive.config import HiveSettings\n", CONTRACTS[0]),
        ("agents/leak.py", "from distill.train import main\n", CONTRACTS[1]),
        ("distill/leak.py", "def f():\n    from hive.rounds import book\n", CONTRACTS[2]),
        ("hive/rounds/leak.py", "from distill.losses import kd_loss\n", CONTRACTS[3]),
        ("hive/ui/leak.py", "def f():\n    import hive.cli.app\n", CONTRACTS[4]),
    ],
)
def test_a_deliberate_violation_breaks_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / module).write_text(line)

    result = lint_imports(tmp_path, ROOT / "pyproject.toml")

    assert result.returncode != 0
    assert [name for name, verdict in verdicts(result.stdout).items() if verdict == "BROKEN"] == [contract]
    assert module.removesuffix(".py").replace("/", ".") in result.stdout


def module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, top-level package) of each import that runs when the module is imported: the module's own
    statements and those under its ifs and trys, but not inside functions or ``if TYPE_CHECKING:``."""
    found: list[tuple[int, str]] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending += node.body
            pending += node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
        elif isinstance(node, ast.With):
            pending += node.body
    return found


def test_deepspeed_and_mlflow_are_imported_only_inside_functions() -> None:
    eager = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, name in module_level_imports(ast.parse(path.read_text(), filename=str(path))):
                if name in LAZY:
                    eager.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert eager == []


def test_the_check_sees_an_eager_import() -> None:
    tree = ast.parse(
        "import os\ntry:\n    import deepspeed\nexcept ImportError:\n    raise\ndef f():\n    import mlflow\n"
    )

    assert [name for _, name in module_level_imports(tree)] == ["deepspeed", "os"]


def test_the_cli_and_an_agent_start_without_deepspeed_or_mlflow() -> None:
    code = (
        f"import sys, hive.cli.app, agents.runtime, agents.sdk; print(sorted(m for m in {LAZY!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_module_imports() -> None:
    """A moved module leaves no import of its old name behind, in any module (benchmarks included)."""
    failed = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.endswith("__main__"):
                continue  # runs the CLI
            try:
                importlib.import_module(info.name)
            except ImportError as err:
                failed.append(f"{info.name}: {err}")
    assert failed == []
