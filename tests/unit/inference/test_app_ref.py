"""App references: parsing each shape, loading files, modules and folders, and every way to fail."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.inference.app_ref import AppLoadError, AppRef, describe, load_app, parse_app_ref
from meshnode.inference.external import ExternalServer

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Loading a file puts its folder on sys.path and its module in sys.modules: undo both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("meshnode_app_") or name.startswith("sibling_helper"):
            del sys.modules[name]


def write_app(folder: Path, source: str, name: str = "app.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("apps/echo.py:Echo", AppRef("file", "apps/echo.py", "Echo")),
        ("/abs/path/app.py:Model", AppRef("file", "/abs/path/app.py", "Model")),
        ("../elsewhere/app.py:Model", AppRef("file", "../elsewhere/app.py", "Model")),
        ("app.py:Model", AppRef("file", "app.py", "Model")),
        ("meshnode.apps.echo:Echo", AppRef("module", "meshnode.apps.echo", "Echo")),
        ("mymodule:Model", AppRef("module", "mymodule", "Model")),
        ("apps/external_server", AppRef("folder", "apps/external_server", None)),
        ("  /srv/models/llm  ", AppRef("folder", "/srv/models/llm", None)),
    ],
)
def test_parse_each_shape(ref: str, expected: AppRef) -> None:
    assert parse_app_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "complaint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("apps/echo.py", "no class"),
        ("apps/echo.py:", "not a class name"),
        ("apps/echo.py:1Echo", "not a class name"),
        ("apps/echo.py:Echo.Inner", "not a class name"),
        (":Echo", "no file or module"),
        ("apps/echo:Echo", "must end in .py"),
        ("not-a-module:Echo", "neither a .py file nor a module name"),
        ("pkg..mod:Echo", "neither a .py file nor a module name"),
    ],
)
def test_parse_rejects_bad_shapes(ref: str, complaint: str) -> None:
    with pytest.raises(AppLoadError, match=complaint):
        parse_app_ref(ref)


def test_load_file_outside_the_repository(tmp_path: Path) -> None:
    path = write_app(
        tmp_path / "elsewhere",
        """
        class Doubler:
            def predict(self, request, header=None):
                return {"twice": request["x"] * 2}
        """,
    )
    assert not path.is_relative_to(REPO)
    app = load_app(f"{path}:Doubler", data_dir=tmp_path / "data")
    assert app.predict({"x": 21}) == {"twice": 42}


def test_relative_file_resolves_against_base_dir(tmp_path: Path) -> None:
    write_app(
        tmp_path / "project" / "models",
        "class M:\n    def predict(self, request, header=None):\n        return 1\n",
    )
    app = load_app("models/app.py:M", data_dir=tmp_path, base_dir=tmp_path / "project")
    assert app.predict({}) == 1


def test_file_can_import_its_neighbours(tmp_path: Path) -> None:
    folder = tmp_path / "withhelper"
    write_app(folder, "ANSWER = 42\n", name="sibling_helper.py")
    path = write_app(
        folder,
        """
        from sibling_helper import ANSWER

        class M:
            def predict(self, request, header=None):
                return ANSWER
        """,
    )
    assert load_app(f"{path}:M", data_dir=tmp_path).predict({}) == 42


def test_same_file_name_in_two_folders_gives_two_modules(tmp_path: Path) -> None:
    first = write_app(
        tmp_path / "a", "class M:\n    def predict(self, request, header=None):\n        return 'a'\n"
    )
    second = write_app(
        tmp_path / "b", "class M:\n    def predict(self, request, header=None):\n        return 'b'\n"
    )
    one, two = load_app(f"{first}:M", data_dir=tmp_path), load_app(f"{second}:M", data_dir=tmp_path)
    assert (one.predict({}), two.predict({})) == ("a", "b")
    assert type(one).__module__ != type(two).__module__


def test_load_module_reference(tmp_path: Path) -> None:
    app = load_app("meshnode.apps.echo:Echo", data_dir=tmp_path)
    assert app.predict({"a": 1}) == {"echo": {"a": 1}}


def test_load_folder_gives_an_external_server_not_started(tmp_path: Path) -> None:
    app = load_app(str(REPO / "apps" / "external_server"), data_dir=tmp_path)
    assert isinstance(app, ExternalServer)
    assert app.pid is None  # constructed only: setup() starts the job
    assert describe(app)["streaming"] is True


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError, match=r"nope\.py does not exist"):
        load_app(f"{tmp_path}/nope.py:M", data_dir=tmp_path)


def test_missing_module(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError, match="no module named 'no_such_module_xyz'"):
        load_app("no_such_module_xyz.inner:M", data_dir=tmp_path)


def test_missing_folder_hints_at_a_module_without_class(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError, match="needs :ClassName"):
        load_app("meshnode.apps.echo", data_dir=tmp_path)


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AppLoadError, match=r"has no config\.yaml"):
        load_app(str(tmp_path / "empty"), data_dir=tmp_path)


def test_missing_class_lists_the_classes_there(tmp_path: Path) -> None:
    path = write_app(tmp_path, "class Alpha:\n    pass\n\nclass Beta:\n    pass\n")
    with pytest.raises(AppLoadError, match=r"has no 'Gamma' \(classes there: Alpha, Beta\)"):
        load_app(f"{path}:Gamma", data_dir=tmp_path)


def test_not_a_class(tmp_path: Path) -> None:
    path = write_app(tmp_path, "def Model():\n    return None\n")
    with pytest.raises(AppLoadError, match="Model is a function, not a class"):
        load_app(f"{path}:Model", data_dir=tmp_path)


def test_class_without_predict(tmp_path: Path) -> None:
    path = write_app(tmp_path, "class Lazy:\n    def setup(self):\n        pass\n")
    with pytest.raises(AppLoadError, match=r"Lazy has no predict\(request, header\)"):
        load_app(f"{path}:Lazy", data_dir=tmp_path)


def test_predictor_subclass_that_forgot_predict(tmp_path: Path) -> None:
    path = write_app(
        tmp_path, "from meshnode.inference.predictor import Predictor\n\nclass P(Predictor):\n    pass\n"
    )
    with pytest.raises(AppLoadError, match="does not override predict"):
        load_app(f"{path}:P", data_dir=tmp_path)


def test_async_predict_must_be_a_plain_method(tmp_path: Path) -> None:
    path = write_app(
        tmp_path, "class A:\n    async def predict(self, request, header=None):\n        return 1\n"
    )
    with pytest.raises(AppLoadError, match="predict is async"):
        load_app(f"{path}:A", data_dir=tmp_path)


def test_streaming_method_must_be_an_async_generator(tmp_path: Path) -> None:
    path = write_app(
        tmp_path,
        """
        class S:
            def predict(self, request, header=None):
                return 1

            async def async_predict(self, request):
                return "not a generator"
        """,
    )
    with pytest.raises(AppLoadError, match="async_predict must be an async generator"):
        load_app(f"{path}:S", data_dir=tmp_path)


def test_data_dir_is_passed_when_accepted(tmp_path: Path) -> None:
    path = write_app(
        tmp_path,
        """
        class Keeps:
            def __init__(self, data_dir=None):
                self.data_dir = data_dir

            def predict(self, request, header=None):
                return str(self.data_dir)

        class KeywordOnly:
            def __init__(self, *, data_dir):
                self.data_dir = data_dir

            def predict(self, request, header=None):
                return str(self.data_dir)

        class Plain:
            def predict(self, request, header=None):
                return None
        """,
    )
    data_dir = tmp_path / "data"
    assert load_app(f"{path}:Keeps", data_dir=data_dir).data_dir == data_dir
    assert load_app(f"{path}:KeywordOnly", data_dir=data_dir).data_dir == data_dir
    assert not hasattr(load_app(f"{path}:Plain", data_dir=data_dir), "data_dir")


def test_constructor_failure_names_the_reference(tmp_path: Path) -> None:
    path = write_app(
        tmp_path,
        """
        class Broken:
            def __init__(self):
                raise RuntimeError("weights missing")

            def predict(self, request, header=None):
                return None
        """,
    )
    with pytest.raises(AppLoadError, match=r"Broken\(\) failed: RuntimeError: weights missing") as caught:
        load_app(f"{path}:Broken", data_dir=tmp_path)
    assert str(path) in str(caught.value)


def test_import_failure_is_reported_and_forgotten(tmp_path: Path) -> None:
    path = write_app(tmp_path, "import no_such_dependency_xyz\n")
    modules_before = set(sys.modules)
    with pytest.raises(AppLoadError, match=r"importing .* failed: ModuleNotFoundError"):
        load_app(f"{path}:M", data_dir=tmp_path)
    assert not any(name.startswith("meshnode_app_") for name in set(sys.modules) - modules_before)


def test_syntax_error_is_an_app_load_error(tmp_path: Path) -> None:
    path = write_app(tmp_path, "class M(:\n")
    with pytest.raises(AppLoadError, match="SyntaxError"):
        load_app(f"{path}:M", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("knob", "complaint"),
    [
        ("max_batch_size = 0", "max_batch_size must be an integer >= 1"),
        ("max_concurrency = 2.5", "max_concurrency must be an integer >= 1"),
        ("max_batch_wait_s = -1", "max_batch_wait_s must be a number"),
    ],
)
def test_bad_knobs_fail_at_load(tmp_path: Path, knob: str, complaint: str) -> None:
    path = write_app(
        tmp_path, f"class K:\n    {knob}\n\n    def predict(self, request, header=None):\n        return 1\n"
    )
    with pytest.raises(AppLoadError, match=complaint):
        load_app(f"{path}:K", data_dir=tmp_path)


def test_describe_reads_defaults_and_overrides(tmp_path: Path) -> None:
    path = write_app(
        tmp_path,
        """
        class Batched:
            max_batch_size = 8
            max_batch_wait_s = 0.005

            def predict(self, request, header=None):
                return 1

            def predict_batch(self, requests):
                return [1 for _ in requests]
        """,
    )
    batched = load_app(f"{path}:Batched", data_dir=tmp_path)
    assert describe(batched) == {
        "streaming": False,
        "batch": True,
        "max_batch_size": 8,
        "max_batch_wait_s": 0.005,
        "max_concurrency": 1,
    }
    stream = load_app("meshnode.apps.stream:Stream", data_dir=tmp_path)
    assert describe(stream)["streaming"] is True
    assert describe(stream)["batch"] is False
