"""Flags from elsewhere: ``$MESHNODE_<FLAG>`` and ``--config FILE`` (TOML or YAML) for ``meshnode join``.

Built on click's own layers, so no default is written twice and each value is checked by the
flag's own type: each option's ``envvar`` (``add_env_vars``) and the context's ``default_map``
(``read_config``). A value comes from the first of:

1. the command line;
2. the environment: ``MESHNODE_`` and the flag's name, upper case, dashes as underscores
   (``--mesh-id`` is ``$MESHNODE_MESH_ID``); a repeatable flag's values are separated by spaces
   (``MESHNODE_SEED="10.0.0.1:8471 10.0.0.2:8471"``), folders of ``--app-dir`` by ``:`` as in
   ``$PATH``; a switch takes true/false, 1/0, yes/no, on/off;
3. the file of ``--config`` (or ``$MESHNODE_CONFIG``): keys are the flags' names without ``--``
   (``mesh-id`` or ``mesh_id``), a list for a repeatable flag, a table ``set`` for the ``--set``
   knobs; a relative path there is relative to the file's folder;
4. ``AgentConfig``'s default.

A repeatable flag given in a higher layer replaces the lower one's list, except ``--set``: its
knobs are merged name by name, the higher layer winning. ``$MESHNODE_TOKEN`` keeps its place
below ``--token-file`` (``trust/token.py``), so ``--token`` has no variable of its own. A ``token``
in the file is refused unless only its owner may read it (mode 0600): a config file is the kind of
file that gets copied and committed. A bad file (unreadable, bad TOML or YAML, an unknown key, a
value of the wrong type or that the flag refuses) ends the command with exit code 2 and one line
naming the file and the key.
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from ..errors import ConfigError
from ..trust.token import check_token
from .params import Knob

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "ConfigFile",
    "ConfigFileError",
    "add_env_vars",
    "config_key",
    "env_var_name",
    "read_config",
    "without_flag_vars",
]

ENV_PREFIX = "MESHNODE_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}
# Read by their own code, not by click: $MESHNODE_TOKEN ranks below --token-file (trust/token.py).
_OWN_ENV = frozenset({"token"})
# A file cannot name another file.
_NOT_IN_FILE = frozenset({"config"})
KNOBS_KEY = "set"
# Larger is no hand-written configuration; the limit keeps a wrong path (a disk image) cheap.
_MAX_FILE_BYTES = 1024 * 1024


class ConfigFileError(Exception):
    """A config file the command cannot use; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class ConfigFile:
    """What a config file says: values by click parameter name, and its ``set`` knobs."""

    path: Path
    defaults: dict[str, Any]
    # (name, value) as ``--set`` gives them; merged under the command line's and the environment's.
    knobs: tuple[tuple[str, Any], ...]


def config_key(option: click.Option) -> str:
    """The flag's name without ``--`` (``--mdns/--no-mdns`` is ``mdns``): its key in a file."""
    longs = [opt for opt in option.opts if opt.startswith("--")]
    return (longs[0] if longs else option.opts[0]).lstrip("-")


def env_var_name(option: click.Option) -> str:
    """``$MESHNODE_<FLAG>`` of one option (``--mesh-id`` is ``MESHNODE_MESH_ID``)."""
    return ENV_PREFIX + config_key(option).upper().replace("-", "_")


def add_env_vars(command: click.Command) -> None:
    """Give every option of `command` its ``$MESHNODE_<FLAG>``, shown in ``--help``."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in _OWN_ENV:
            param.envvar = env_var_name(param)
            param.show_envvar = True


def without_flag_vars(environ: Mapping[str, str], command: click.Command) -> dict[str, str]:
    """`environ` less every ``$MESHNODE_<FLAG>`` of `command`: for agents a command starts itself.

    ``meshnode demo`` and test harnesses give their agents every flag that matters; a variable
    meant for the user's own node (its seeds, its config file, its pinned apps) must not reach them.
    """
    names = {param.envvar for param in command.params if isinstance(param.envvar, str)}
    return {name: value for name, value in environ.items() if name not in names}


def read_config(path: Path, command: click.Command, ctx: click.Context) -> ConfigFile:
    """The values of `command`'s flags that the file at `path` sets, each checked by its flag's type."""
    table = _parse(path)
    options = {
        config_key(param): param
        for param in command.params
        if isinstance(param, click.Option) and config_key(param) not in _NOT_IN_FILE
    }
    defaults: dict[str, Any] = {}
    knobs: tuple[tuple[str, Any], ...] = ()
    seen: dict[str, str] = {}
    for raw_key, value in table.items():
        if not isinstance(raw_key, str):
            raise ConfigFileError(f"{path}: key {raw_key!r}: keys are flag names such as 'http'")
        key = raw_key.strip().lower().replace("_", "-")
        if key in seen:
            raise ConfigFileError(f"{path}: key {raw_key!r}: given twice (also as {seen[key]!r})")
        seen[key] = raw_key
        option = options.get(key)
        if option is None:
            raise ConfigFileError(f"{path}: key {raw_key!r}: {_unknown(key, options)}")
        where = f"{path}: key {raw_key!r}"
        if key == KNOBS_KEY:
            knobs = _knobs(value, where, option, ctx)
            continue
        checked = _shaped(value, option, where, path.parent)
        if option.name == "token":
            _check_private(path, where)
            try:
                check_token(checked, "this file")
            except ConfigError as exc:
                raise ConfigFileError(f"{where}: {exc.message}") from None
        try:
            option.process_value(ctx, checked)
        except click.BadParameter as exc:
            raise ConfigFileError(f"{where}: {exc.message}") from None
        assert option.name is not None
        defaults[option.name] = checked
    return ConfigFile(path, defaults, knobs)


def _parse(path: Path) -> Mapping[Any, Any]:
    """The file's top-level table; ConfigFileError for what cannot be read or parsed."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigFileError(f"{path}: unknown format; name the file .toml, .yaml or .yml")
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigFileError(f"{path}: over {_MAX_FILE_BYTES} bytes; is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        table = tomllib.loads(text) if kind == "TOML" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if table is None:  # an empty YAML file sets nothing, as an empty TOML file
        return {}
    if not isinstance(table, Mapping):
        raise ConfigFileError(f"{path}: expected a table of flag names at the top, got {_kind(table)}")
    return table


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for pyyaml's several: what is wrong, and where."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (at line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def _shaped(value: object, option: click.Option, where: str, folder: Path) -> Any:
    """`value` in the shape the option takes from click: a switch's bool, strings, lists of them."""
    if option.is_flag and not option.multiple:
        if not isinstance(value, bool):
            raise ConfigFileError(f"{where}: takes true or false, not {_kind(value)}")
        return value
    if option.multiple:
        items = value if isinstance(value, list) else [value]
        strings = [item for item in items if isinstance(item, str)]
        if len(strings) != len(items):
            raise ConfigFileError(f"{where}: takes a list of strings, not {_kind(value)}")
        return [_path(item, option, folder) for item in strings]
    if not isinstance(value, str):
        raise ConfigFileError(f"{where}: takes a string, not {_kind(value)}")
    return _path(value, option, folder)


def _path(value: str, option: click.Option, folder: Path) -> str:
    """A path option's value, relative ones taken from the config file's folder."""
    if not isinstance(option.type, click.Path) or not value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else folder / path)


def _knobs(
    value: object, where: str, option: click.Option, ctx: click.Context
) -> tuple[tuple[str, Any], ...]:
    """The ``set`` table as ``--set`` gives it: (name, value) pairs, each checked as it checks them."""
    if isinstance(value, Mapping):
        items = [f"{name}={_knob_text(knob, f'{where}.{name}')}" for name, knob in value.items()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise ConfigFileError(f"{where}: takes a table of NAME = VALUE, not {_kind(value)}")
    knobs = []
    for item in items:
        try:
            knobs.append(Knob().convert(item, option, ctx))
        except click.BadParameter as exc:
            raise ConfigFileError(f"{where}: {exc.message}") from None
    return tuple(knobs)


def _knob_text(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ConfigFileError(f"{where}: takes a number or true/false, not {_kind(value)}")


def _check_private(path: Path, where: str) -> None:
    """Refuse a token in a file that others may read (or write)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigFileError(f"{where}: cannot check who may read the file ({exc.strerror})") from None
    if os.name == "posix" and mode & 0o077:
        raise ConfigFileError(
            f"{where}: the file holds the mesh's token but others may read it (mode {mode:04o}); "
            f"chmod 600 it, or give token-file instead"
        )


def _unknown(key: str, options: Mapping[str, click.Option]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(options))}"
    return f"no such flag of 'meshnode join'; {hint}"


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
    if isinstance(value, Mapping):
        return "a table"
    return names.get(type(value), type(value).__name__)
