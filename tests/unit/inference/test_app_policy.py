"""Which apps a node may run: its environment, its --app-dir folders, config.yaml apps only when allowed.

Every case builds its own folders: a working directory (``cwd``, the first entry of the worker's
search path, never the environment), an ``env`` folder standing for site-packages, app folders and
places outside them. Nothing here may be imported by the check: packages whose ``__init__`` would
leave a marker file prove it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshnode.inference.app_policy import AppPolicy, refusal, worker_search_path

REPO = Path(__file__).resolve().parents[3]
CONFIG = 'job: exec "$PYTHON" server.py\n'
NO_EXTERNAL = "only nodes started with --allow-external-apps"
OUTSIDE = "outside this node's app folders"


@pytest.fixture(autouse=True)
def _isolated_finders(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The path finder caches a finder per folder it was asked about: keep this test's out."""
    monkeypatch.setattr(sys, "path_importer_cache", dict(sys.path_importer_cache))
    before = set(sys.modules)
    yield
    leaked = {name for name in set(sys.modules) - before if name.startswith(("stray", "sidefx", "models"))}
    assert not leaked, f"the check imported {leaked}"


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


@pytest.fixture
def env(tmp_path: Path) -> Path:
    folder = tmp_path / "env"
    folder.mkdir()
    return folder


def write(
    path: Path, text: str = "class M:\n    def predict(self, request, header=None):\n        return 1\n"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def side_effect(marker: Path) -> str:
    """Source that, if it ever ran, would leave `marker` behind."""
    return f"open({str(marker)!r}, 'w').write('imported')\n"


def check(
    ref: str, cwd: Path, env: Path | None = None, *, dirs: tuple[Path, ...] = (), external: bool = False
) -> str | None:
    """The check as a worker started in `cwd` with `env` on its path would need it."""
    search = [str(cwd)] + ([str(env)] if env is not None else []) + sys.path[1:]
    return refusal(ref, AppPolicy.build(dirs, external, base_dir=cwd), base_dir=cwd, search_path=search)


# -- modules -------------------------------------------------------------------------------------


def test_modules_of_the_environment_run_with_no_flags(cwd: Path) -> None:
    for ref in ("meshnode.apps.echo:Echo", "meshnode.apps.stream:Stream", "json:JSONDecoder", "os.path:X"):
        assert check(ref, cwd) is None, ref
    assert refusal("meshnode.apps.echo:Echo", AppPolicy()) is None  # with the real worker path


def test_a_module_installed_elsewhere_on_the_path_counts_as_the_environment(cwd: Path, env: Path) -> None:
    write(env / "installed_model.py")
    assert check("installed_model:M", cwd, env) is None


def test_a_module_found_only_in_the_working_directory_is_refused_unless_it_is_an_app_folder(
    cwd: Path, env: Path
) -> None:
    write(cwd / "stray.py", side_effect(cwd / "ran"))
    why = check("stray:M", cwd, env)
    assert why is not None and "working directory does not count" in why and "stray.py" in why
    assert check("stray:M", cwd, env, dirs=(cwd,)) is None
    assert not (cwd / "ran").exists()


def test_a_file_in_the_working_directory_cannot_shadow_an_installed_module(cwd: Path, env: Path) -> None:
    write(env / "shadowed.py")
    write(cwd / "shadowed.py", side_effect(cwd / "ran"))
    # The worker searches the working directory first, so it would import this one: refused.
    assert check("shadowed:M", cwd, env) is not None
    write(cwd / "json.py", side_effect(cwd / "ran"))
    assert check("json:JSONDecoder", cwd, env) is not None
    assert not (cwd / "ran").exists()


def test_every_package_on_the_way_must_be_allowed_not_only_the_module(cwd: Path) -> None:
    write(cwd / "models" / "__init__.py", "")
    write(cwd / "models" / "llm" / "__init__.py", "")
    write(cwd / "models" / "llm" / "small.py")
    assert check("models.llm.small:M", cwd, dirs=(cwd / "models",)) is None
    # An app folder deeper than the top package: models/__init__.py would run from outside it.
    why = check("models.llm.small:M", cwd, dirs=(cwd / "models" / "llm",))
    assert why is not None and "models/__init__.py" in why


def test_the_check_never_runs_a_package_init_or_the_module(
    cwd: Path, env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    monkeypatch.syspath_prepend(str(env))  # importable here too: a check that imported would run it
    for root in (cwd, env):
        write(root / "sidefx" / "__init__.py", side_effect(marker))
        write(root / "sidefx" / "inner" / "__init__.py", side_effect(marker))
        write(root / "sidefx" / "inner" / "app.py", side_effect(marker))
    assert check("sidefx.inner.app:M", cwd, env) is not None  # the working directory's copy wins
    assert check("sidefx.inner.app:M", cwd, env, dirs=(cwd,)) is None
    os.remove(cwd / "sidefx" / "__init__.py")  # the working directory's copy is a namespace portion
    check("sidefx.inner.app:M", cwd, env)
    assert not marker.exists()
    assert "sidefx" not in sys.modules


def test_a_missing_module_or_part_is_refused_with_its_name(cwd: Path) -> None:
    why = check("no_such_module_xyz.inner:M", cwd)
    assert why is not None and "no module named 'no_such_module_xyz'" in why
    why = check("meshnode.apps.no_such_app:M", cwd)
    assert why is not None and "no module named 'meshnode.apps.no_such_app'" in why
    why = check("meshnode.apps.echo.deeper:M", cwd)
    assert why is not None and "not a package" in why


def test_the_worker_searches_its_working_directory_first() -> None:
    assert worker_search_path(Path("/srv/agent"))[0] == "/srv/agent"


# -- files ---------------------------------------------------------------------------------------


def test_a_file_runs_only_from_inside_an_app_folder(tmp_path: Path, cwd: Path) -> None:
    apps = tmp_path / "apps"
    inside = write(apps / "nested" / "model.py")
    outside = write(tmp_path / "elsewhere" / "evil.py")
    assert check(f"{inside}:M", cwd, dirs=(apps,)) is None
    why = check(f"{outside}:M", cwd, dirs=(apps,))
    assert why is not None and OUTSIDE in why and "--app-dir" in why
    assert check(f"{inside}:M", cwd) is not None  # no app folder at all: no file runs


def test_relative_files_and_app_folders_resolve_against_the_working_directory(cwd: Path) -> None:
    write(cwd / "apps" / "model.py")
    assert check("apps/model.py:M", cwd, dirs=(Path("apps"),)) is None
    assert check("./apps/model.py:M", cwd, dirs=(cwd / "apps",)) is None


def test_a_missing_file_inside_an_app_folder_is_refused_as_missing(tmp_path: Path, cwd: Path) -> None:
    why = check(f"{tmp_path}/apps/nope.py:M", cwd, dirs=(tmp_path / "apps",))
    assert why is not None and "does not exist" in why


def test_dot_dot_cannot_climb_out_of_an_app_folder(tmp_path: Path, cwd: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    write(tmp_path / "evil.py")
    why = check(f"{apps}/../evil.py:M", cwd, dirs=(apps,))
    assert why is not None and OUTSIDE in why


def test_a_symlink_cannot_lead_out_of_an_app_folder(tmp_path: Path, cwd: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    evil = write(tmp_path / "evil.py")
    (apps / "innocent.py").symlink_to(evil)
    (apps / "door").symlink_to(tmp_path, target_is_directory=True)
    for ref in (f"{apps}/innocent.py:M", f"{apps}/door/evil.py:M"):
        why = check(ref, cwd, dirs=(apps,))
        assert why is not None and OUTSIDE in why and str(evil) in why, ref


def test_an_app_folder_given_through_a_symlink_holds_its_real_files(tmp_path: Path, cwd: Path) -> None:
    real = tmp_path / "real_apps"
    model = write(real / "model.py")
    (tmp_path / "linked_apps").symlink_to(real, target_is_directory=True)
    assert check(f"{model}:M", cwd, dirs=(tmp_path / "linked_apps",)) is None
    assert check(f"{tmp_path}/linked_apps/model.py:M", cwd, dirs=(real,)) is None


# -- config.yaml folders -------------------------------------------------------------------------


def test_a_config_yaml_app_runs_only_with_allow_external_apps(tmp_path: Path, cwd: Path) -> None:
    folder = tmp_path / "apps" / "server"
    write(folder / "config.yaml", CONFIG)
    why = check(str(folder), cwd, dirs=(tmp_path / "apps",))
    assert why is not None and NO_EXTERNAL in why
    assert check(str(folder), cwd, dirs=(tmp_path / "apps",), external=True) is None
    assert check(str(folder), cwd, dirs=(folder,), external=True) is None  # the folder itself
    why = check(str(folder), cwd, dirs=(tmp_path / "other",), external=True)
    assert why is not None and OUTSIDE in why


def test_a_folder_without_config_yaml_is_refused(tmp_path: Path, cwd: Path) -> None:
    (tmp_path / "apps" / "empty").mkdir(parents=True)
    why = check(str(tmp_path / "apps" / "empty"), cwd, dirs=(tmp_path / "apps",), external=True)
    assert why is not None and "has no config.yaml" in why


def test_the_shipped_external_server_example_needs_the_flag() -> None:
    example = str(REPO / "apps" / "external_server")
    assert NO_EXTERNAL in (refusal(example, AppPolicy.build([REPO / "apps"], False)) or "")
    assert refusal(example, AppPolicy.build([REPO / "apps"], True)) is None


# -- the policy ----------------------------------------------------------------------------------


def test_pinned_files_and_folders_grant_their_folder_and_nothing_else(tmp_path: Path) -> None:
    model = write(tmp_path / "pinned" / "model.py")
    server = tmp_path / "servers" / "one"
    write(server / "config.yaml", CONFIG)
    policy = AppPolicy.build(
        [],
        False,
        pinned=[f"{model}:M", str(server), "meshnode.apps.echo:Echo", "bad.py"],
        base_dir=tmp_path,
    )
    assert policy.app_dirs == (model.parent.resolve(), server.resolve())
    neighbour = write(tmp_path / "pinned" / "neighbour.py")
    assert refusal(f"{neighbour}:M", policy) is None
    # The pinned server's folder is an app folder, but declared by others it still needs the flag.
    assert NO_EXTERNAL in (refusal(str(server), policy) or "")


def test_references_that_fit_no_shape_are_refused_with_the_parse_error(cwd: Path) -> None:
    for ref, complaint in (("", "empty"), ("apps/echo.py", "no class"), ("not-a-module:X", "neither")):
        why = check(ref, cwd)
        assert why is not None and complaint in why, ref
