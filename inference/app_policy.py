"""Which apps this node may run: its Python environment, its ``--app-dir`` folders, and shell-running
``config.yaml`` apps only when started with ``--allow-external-apps``.

``refusal(ref, policy)`` is the one check, a function of the reference text, the policy and what the
filesystem says; it answers why the node may not run the app, or None when it may. It runs on the
node that receives a declaration (``PUT /v1/deployments``: 422 with the reason) and on every node
placement picks, before a worker is spawned (a refused node sits the deployment out). Rules:

- ``path/to/file.py:Class``: the file, relative to ``base_dir`` (the agent's working directory, as
  ``load_app`` resolves it) with symlinks and ``..`` resolved, must lie inside an app folder and exist.
- ``path/to/folder`` (``config.yaml``): its commands run in a shell, so only with ``allow_external``;
  the resolved folder must be an app folder or inside one, and hold a ``config.yaml``.
- ``package.module:Class``: found the way the worker's import will find it, and every file that
  import would execute (each package's ``__init__`` and the module) must come from the environment
  (a ``sys.path`` entry other than the working directory) or lie inside an app folder. The working
  directory comes first on the worker's path (``python -m`` puts it there) yet is not the
  environment: a stray ``.py`` file there would otherwise shadow any module name.

Nothing is imported: modules are located with the import system's finders
(``importlib.machinery.PathFinder.find_spec`` on each dotted part, given the parent's search
locations), which list folders but never execute a package's ``__init__``, unlike
``importlib.util.find_spec("a.b")``. What a package's ``__init__`` would do to its own ``__path__``
cannot be known without running it; for a package this process has already imported, its real
``__path__`` is used. The check and the worker's import see the filesystem at different moments: a
local user who can rewrite an app folder between them can run code anyway, as they could by editing
an allowed app.

``AppPolicy.build`` also grants what the node's owner typed: ``--deploy NAME=path/file.py:Class``
makes that file's folder an app folder (``--deploy`` of a ``config.yaml`` folder, the folder), so
pinned apps need no extra flag; pinned replicas themselves are the owner's command and not checked.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path

from meshnode.inference.app_ref import CONFIG_FILE, AppLoadError, parse_app_ref, resolve_target

__all__ = ["AppPolicy", "refusal", "worker_search_path"]


@dataclass(frozen=True)
class AppPolicy:
    """What this node runs besides its Python environment: app folders, and external apps or not."""

    # Absolute folders with symlinks resolved; apps may come from these and anything below them.
    app_dirs: tuple[Path, ...] = ()
    # Whether config.yaml apps (external servers started by shell commands) may run here.
    allow_external: bool = False

    @classmethod
    def build(
        cls,
        app_dirs: Iterable[Path],
        allow_external: bool,
        pinned: Iterable[str] = (),
        base_dir: Path | None = None,
    ) -> AppPolicy:
        """The policy of `app_dirs` (relative to `base_dir`) plus the folders of pinned files and folders."""
        base = base_dir if base_dir is not None else Path.cwd()
        folders = [(base / Path(folder).expanduser()).resolve() for folder in app_dirs]
        for ref in pinned:
            try:
                parsed = parse_app_ref(ref)
            except AppLoadError:
                continue  # the pinned replica reports the bad reference itself
            if parsed.kind == "file":
                folders.append(resolve_target(parsed.target, base).resolve().parent)
            elif parsed.kind == "folder":
                folders.append(resolve_target(parsed.target, base).resolve())
        return cls(tuple(dict.fromkeys(folders)), allow_external)

    def contains(self, path: Path) -> bool:
        """Whether `path` (already resolved) is an app folder or lies inside one."""
        return any(path.is_relative_to(folder) for folder in self.app_dirs)


def worker_search_path(base_dir: Path) -> list[str]:
    """Where a worker started in `base_dir` looks for modules: that folder first, then this
    interpreter's path (``python -m`` puts the working directory first, and a worker is one)."""
    inherited = sys.path if sys.flags.safe_path else sys.path[1:]
    return [str(base_dir), *inherited]


def refusal(
    ref: str,
    policy: AppPolicy,
    *,
    base_dir: Path | None = None,
    search_path: Sequence[str] | None = None,
) -> str | None:
    """Why this node may not run app `ref`, or None when it may; imports nothing.

    `base_dir` is the agent's working directory (relative paths and the worker's first search
    entry); `search_path` the worker's module path (``worker_search_path(base_dir)`` by default).
    """
    base = (base_dir if base_dir is not None else Path.cwd()).absolute()
    try:
        parsed = parse_app_ref(ref)
    except AppLoadError as exc:
        return str(exc)
    prefix = f"app {ref.strip()!r}"
    if parsed.kind == "module":
        path = list(search_path) if search_path is not None else worker_search_path(base)
        return _module_refusal(prefix, parsed.target, policy, base, path)
    if parsed.kind == "folder" and not policy.allow_external:
        return (
            f"{prefix} is a {CONFIG_FILE} app, which runs shell commands: only nodes started with "
            "--allow-external-apps run those"
        )
    joined = resolve_target(parsed.target, base)
    real = joined.resolve()
    if not policy.contains(real):
        where = f"{parsed.target} (resolved: {real})" if real != Path(os.path.abspath(joined)) else str(real)
        return f"{prefix}: {where} is outside this node's app folders (meshnode join --app-dir DIR)"
    if parsed.kind == "file":
        return None if real.is_file() else f"{prefix}: file {parsed.target} does not exist on this node"
    if not (real / CONFIG_FILE).is_file():
        return f"{prefix}: folder {parsed.target} has no {CONFIG_FILE} on this node"
    return None


def _module_refusal(
    prefix: str, name: str, policy: AppPolicy, base: Path, search_path: list[str]
) -> str | None:
    """Walk `name` part by part as the import system would, checking each file it would execute."""
    entries = [Path(os.path.abspath(entry or base)) for entry in search_path]
    locations: list[str] | None = None  # None: the top level, searched along `search_path`
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        qualified = ".".join(parts[:depth])
        spec, via_path = _find_spec(qualified, locations, search_path)
        loaded = sys.modules.get(qualified)
        if spec is None and loaded is None:
            return f"{prefix}: no module named {qualified!r} in this node's Python environment"
        origin = spec.origin if spec is not None and via_path and spec.has_location else None
        if origin is not None and not _trusted(Path(origin), entries, base, policy):
            return (
                f"{prefix}: module {qualified} would be loaded from {origin}, which is neither this "
                "node's Python environment nor inside one of its app folders (meshnode join --app-dir "
                "DIR; the working directory does not count as the environment)"
            )
        if depth == len(parts):
            return None
        # A package already imported here has its real __path__ (its __init__ may have changed it).
        search = getattr(loaded, "__path__", None) if loaded is not None else None
        if search is None and spec is not None:
            search = spec.submodule_search_locations
        if search is None and f"{qualified}.{parts[depth]}" not in sys.modules:  # os.path is, say
            return f"{prefix}: {qualified} is a module, not a package, so it has no {parts[depth]!r}"
        locations = list(search or ())
    return None


def _find_spec(
    name: str, locations: list[str] | None, search_path: list[str]
) -> tuple[ModuleSpec | None, bool]:
    """The spec the import system would find for `name`, and whether the path finder found it.

    The meta-path finders are asked in their order. The path finder searches the worker's path
    (top level) or the parent's locations, and where it finds a file is then checked; the other
    finders (built-in, frozen, an editable install's) are the environment's own and answer as is.
    """
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            where = locations if locations is not None else search_path
            spec = importlib.machinery.PathFinder.find_spec(name, where)
            if spec is not None:
                return spec, True
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(name, locations)
        except Exception:  # a third-party finder that cannot answer is no answer
            spec = None
        if spec is not None:
            return spec, False
    return None, False


def _trusted(origin: Path, entries: list[Path], base: Path, policy: AppPolicy) -> bool:
    """Whether code at `origin` may run: inside an app folder, or under an environment entry.

    An origin belongs to the deepest search-path entry that contains it (an editable install's
    tree may live inside the working directory), compared without resolving symlinks, since that
    is how the entry found it.
    """
    if policy.contains(origin.resolve()):
        return True
    absolute = Path(os.path.abspath(origin))
    containing = [entry for entry in entries if absolute.is_relative_to(entry)]
    if not containing:
        return False
    deepest = max(containing, key=lambda entry: len(entry.parts))
    return deepest != base
