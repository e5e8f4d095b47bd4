"""docs/architecture.md names only what exists: every path, module, class and function in backticks.

The page walks a request through the code naming the function at each hop; when code moves or is
renamed, this test names the stale reference instead of letting the page quietly lie. Names are
checked against the source's syntax trees (no imports), so the check is fast and needs no torch.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
SOURCES = ("node", "mesh", "inference", "apps")
PATH_PREFIXES = (*SOURCES, "tests", "bench", "docs", "scripts")
QUALIFIED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
CLASS_NAME = re.compile(r"[A-Z][a-z]\w*")
# The path forms ``mesh/routing.rank`` (a module file, then a name in it).
PATH_AND_NAME = re.compile(r"((?:[\w]+/)+[\w]+)\.([A-Za-z_]\w*)")
FILE_SUFFIXES = (".py", ".md", ".sh", ".toml", ".yaml", "/")
# Backticked words that look like class names but are not code (an HTTP header).
NOT_CODE = frozenset({"Accept"})


def _names_in_source() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Module short name -> its top-level names; class name -> its attributes (every definition)."""
    modules: dict[str, set[str]] = defaultdict(set)
    classes: dict[str, set[str]] = defaultdict(set)
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            module = modules[path.stem]
            for node in tree.body:
                module.update(_defined(node))
                if isinstance(node, ast.ClassDef):
                    attrs = classes[node.name]
                    for item in node.body:
                        attrs.update(_defined(item))
                    # Attributes set in methods (self.x = ...) count too: they are what readers see.
                    for sub in ast.walk(node):
                        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                            attrs.add(sub.attr)
    return modules, classes


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {target.id for target in node.targets if isinstance(target, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, ast.ImportFrom | ast.Import):
        return {alias.asname or alias.name.split(".")[0] for alias in node.names}
    return set()


def _backticked(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def stale_references(text: str) -> list[str]:
    """Every backticked reference in `text` that names nothing in the repository."""
    modules, classes = _names_in_source()
    stale = []
    for token in _backticked(text):
        token = token.strip().removesuffix("()")
        if token in NOT_CODE:
            continue
        if token.endswith(FILE_SUFFIXES) and "/" not in token.rstrip("/"):
            if not any(ROOT.glob(f"**/{token}")):
                stale.append(token)
        elif token.startswith(tuple(f"{prefix}/" for prefix in PATH_PREFIXES)) and token.endswith(
            FILE_SUFFIXES
        ):
            if not (ROOT / token).exists():
                stale.append(token)
        elif match := PATH_AND_NAME.fullmatch(token):
            path, name = match.groups()
            file = ROOT / f"{path}.py"
            if not file.is_file() or name not in modules[file.stem]:
                stale.append(token)
        elif token.startswith(tuple(f"{prefix}/" for prefix in PATH_PREFIXES)):
            if not (ROOT / token).exists():
                stale.append(token)
        elif QUALIFIED.fullmatch(token):
            head, *rest = token.split(".")
            if CLASS_NAME.fullmatch(head):
                if head not in classes or rest[0] not in classes[head]:
                    stale.append(token)
            elif head in modules and head not in ("meshnode", "random") and rest[0] not in modules[head]:
                stale.append(token)
        elif (
            CLASS_NAME.fullmatch(token)
            and token not in classes
            and not any(token in m for m in modules.values())
        ):
            stale.append(token)
    return stale


def test_every_name_the_architecture_page_gives_exists() -> None:
    assert stale_references(DOC.read_text()) == []


def test_the_check_catches_a_stale_name() -> None:
    """The check must be able to fail: made-up modules, classes and functions are reported."""
    page = (
        "`node/predict_api.py` `node/dataplane/forward.py` `Forwarder.serve` `Forwarder.teleport` "
        "`routing.rank` `routing.guess` `mesh/routing.rank` `mesh/routing.nowhere` "
        "`NoSuchClass` `PredictLane`"
    )
    assert stale_references(page) == [
        "node/predict_api.py",
        "Forwarder.teleport",
        "routing.guess",
        "mesh/routing.nowhere",
        "NoSuchClass",
    ]
