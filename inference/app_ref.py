"""App references: from the text a user typed (``--deploy NAME=APP``) to a predictor instance.

Three shapes, told apart by their text alone (``parse_app_ref`` never touches the filesystem):

- ``path/to/file.py:Class``: a Python file anywhere (absolute, or relative to ``base_dir``, the
  current directory by default). It is imported by path under a module name of its own, and its folder
  goes first on ``sys.path``, as ``python path/to/file.py`` would do, so it can import its neighbours.
- ``package.module:Class``: an importable module (``meshnode.apps.echo:Echo``).
- ``path/to/folder``: a folder with a ``config.yaml`` that runs an external HTTP server
  (``ExternalServer``, FedML's custom-image shape).

Which references a node may run at all (its Python environment, its ``--app-dir`` folders,
``config.yaml`` apps only with ``--allow-external-apps``) is ``app_policy.refusal``'s to say, before
anything here imports them: the agent checks, the worker loads.

``load_app`` constructs the instance but does not call ``setup``: the worker does that, so a slow
load is reported as loading, not as a broken reference. Everything wrong with the reference itself
(missing file, missing class, no ``predict``, bad batching knobs) raises ``AppLoadError`` at once.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from meshnode.inference.predictor import Predictor

__all__ = ["CONFIG_FILE", "AppLoadError", "AppRef", "describe", "load_app", "parse_app_ref", "resolve_target"]

CONFIG_FILE = "config.yaml"
_SHAPES = "expected path/to/file.py:Class, package.module:Class, or a folder holding config.yaml"


class AppLoadError(Exception):
    """An app reference that cannot become a predictor; the message names the reference."""


@dataclass(frozen=True)
class AppRef:
    """A parsed app reference: where the code lives and which class to build."""

    kind: Literal["file", "module", "folder"]
    target: str
    class_name: str | None


def parse_app_ref(ref: str) -> AppRef:
    """Split a reference into its shape; raise AppLoadError for text that fits none."""
    text = ref.strip()
    if not text:
        raise AppLoadError(f"empty app reference: {_SHAPES}")
    if ":" not in text:
        if text.endswith(".py"):
            raise AppLoadError(f"app reference {ref!r} names a file but no class: write {text}:ClassName")
        return AppRef("folder", text, None)
    target, _, class_name = text.rpartition(":")
    if not class_name.isidentifier():
        raise AppLoadError(f"app reference {ref!r}: {class_name!r} is not a class name ({_SHAPES})")
    if not target:
        raise AppLoadError(f"app reference {ref!r} names no file or module before ':' ({_SHAPES})")
    if target.endswith(".py"):
        return AppRef("file", target, class_name)
    if "/" in target or "\\" in target:
        raise AppLoadError(f"app reference {ref!r}: a file reference must end in .py ({_SHAPES})")
    if all(part.isidentifier() for part in target.split(".")):
        return AppRef("module", target, class_name)
    raise AppLoadError(f"app reference {ref!r}: {target!r} is neither a .py file nor a module name")


def load_app(ref: str, *, data_dir: Path, base_dir: Path | None = None) -> Any:
    """Resolve ``ref`` and construct its predictor (not set up); raise AppLoadError if it cannot."""
    parsed = parse_app_ref(ref)
    base = base_dir if base_dir is not None else Path.cwd()
    if parsed.kind == "folder":
        instance = _load_folder(ref, resolve_target(parsed.target, base), data_dir)
    else:
        assert parsed.class_name is not None  # parse_app_ref guarantees it for files and modules
        if parsed.kind == "file":
            module = _import_file(ref, resolve_target(parsed.target, base))
        else:
            module = _import_module(ref, parsed.target)
        instance = _construct(ref, module, parsed.class_name, data_dir)
    _check_instance(ref, instance)
    return instance


def describe(instance: Any) -> dict[str, Any]:
    """What the runtime needs to know to drive ``instance``: streaming, batching and concurrency."""
    info = {
        "streaming": inspect.isasyncgenfunction(getattr(instance, "async_predict", None)),
        "batch": callable(getattr(instance, "predict_batch", None)),
        "max_batch_size": getattr(instance, "max_batch_size", Predictor.max_batch_size),
        "max_batch_wait_s": getattr(instance, "max_batch_wait_s", Predictor.max_batch_wait_s),
        "max_concurrency": getattr(instance, "max_concurrency", Predictor.max_concurrency),
    }
    name = type(instance).__name__
    for key in ("max_batch_size", "max_concurrency"):
        value = info[key]
        if type(value) is not int or value < 1:
            raise AppLoadError(f"{name}.{key} must be an integer >= 1, not {value!r}")
    wait = info["max_batch_wait_s"]
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 60:
        raise AppLoadError(f"{name}.max_batch_wait_s must be a number of seconds in 0..60, not {wait!r}")
    return info


def resolve_target(target: str, base: Path) -> Path:
    """Where a file or folder reference points: `target` as is when absolute, else under `base`."""
    path = Path(target).expanduser()
    return path if path.is_absolute() else base / path


def _load_folder(ref: str, folder: Path, data_dir: Path) -> Any:
    if not folder.is_dir():
        hint = " (a module reference needs :ClassName)" if "/" not in ref and "." in ref else ""
        raise AppLoadError(f"app reference {ref!r}: folder {folder} does not exist{hint}; {_SHAPES}")
    if not (folder / CONFIG_FILE).is_file():
        raise AppLoadError(f"app reference {ref!r}: folder {folder} has no {CONFIG_FILE}")
    # Imported here: external.py needs httpx and PyYAML, which plain Python apps never touch.
    from meshnode.inference.external import ExternalServer

    return ExternalServer(folder, data_dir)


def _import_file(ref: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise AppLoadError(f"app reference {ref!r}: file {path} does not exist")
    path = path.resolve()
    # One name per file path: two files both called app.py never collide in sys.modules, and
    # dataclasses and pickle inside the file find their module under that name.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"meshnode_app_{digest}_{path.stem}" if path.stem.isidentifier() else f"meshnode_app_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"app reference {ref!r}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt and SystemExit keep their meaning
        raise AppLoadError(f"app reference {ref!r}: importing {path} failed: {_brief(exc)}") from exc
    return module


def _import_module(ref: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        raise AppLoadError(f"app reference {ref!r}: no module named {missing!r}") from exc
    except Exception as exc:
        raise AppLoadError(f"app reference {ref!r}: importing {name} failed: {_brief(exc)}") from exc


def _construct(ref: str, module: ModuleType, class_name: str, data_dir: Path) -> Any:
    cls = getattr(module, class_name, None)
    if cls is None:
        defined = sorted(
            n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__
        )
        found = f"classes there: {', '.join(defined)}" if defined else "it defines no classes"
        raise AppLoadError(f"app reference {ref!r}: {module.__name__} has no {class_name!r} ({found})")
    if not inspect.isclass(cls):
        raise AppLoadError(f"app reference {ref!r}: {class_name} is a {type(cls).__name__}, not a class")
    if issubclass(cls, Predictor) and inspect.isabstract(cls):
        raise AppLoadError(
            f"app reference {ref!r}: {class_name} subclasses Predictor but does not override predict"
        )
    kwargs: dict[str, Any] = {"data_dir": data_dir} if _accepts_data_dir(cls) else {}
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise AppLoadError(f"app reference {ref!r}: {class_name}() failed: {_brief(exc)}") from exc


def _accepts_data_dir(cls: type) -> bool:
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # classes built in C may have no signature
        return False
    parameter = parameters.get("data_dir")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def _check_instance(ref: str, instance: Any) -> None:
    name = type(instance).__name__
    predict = getattr(instance, "predict", None)
    if not callable(predict):
        raise AppLoadError(f"app reference {ref!r}: {name} has no predict(request, header) method")
    if getattr(type(instance), "predict", None) is Predictor.predict:
        raise AppLoadError(
            f"app reference {ref!r}: {name} subclasses Predictor but does not override predict"
        )
    if inspect.iscoroutinefunction(predict):
        # The worker calls predict from threads and would get a coroutine back instead of an answer.
        raise AppLoadError(
            f"app reference {ref!r}: {name}.predict is async; make it a plain method "
            "(stream with an async generator async_predict instead)"
        )
    stream = getattr(instance, "async_predict", None)
    if stream is not None and not inspect.isasyncgenfunction(stream):
        raise AppLoadError(
            f"app reference {ref!r}: {name}.async_predict must be an async generator (async def with yield)"
        )
    try:
        describe(instance)  # bad batching or concurrency knobs fail now, not on the first request
    except AppLoadError as exc:
        raise AppLoadError(f"app reference {ref!r}: {exc}") from None


def _brief(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
