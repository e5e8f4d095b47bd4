"""``meshnode join``: run this machine's agent and join the mesh.

Every default comes from ``AgentConfig`` (no default is written twice); every flag may also come
from ``$MESHNODE_<FLAG>`` or a ``--config`` file (``config_file.py`` says which wins). A bad value
ends with exit code 2 and one line naming the flag, or the file and the key. The agent is imported
inside the command so ``--help`` stays instant. Logs go to stderr as text or JSON (``meshnode.logs``);
on a terminal a status line shows how joining goes (``join_progress.py``).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from ..config import AgentConfig
from ..errors import ConfigError, MeshnodeError
from ..logs import LOG_FORMATS, LogFormat, configure_logging, log_handler
from ..mesh.config import PROFILES
from ..trust.token import TOKEN_ENV, check_token
from .config_file import CONFIG_ENV, ConfigFile, ConfigFileError, add_env_vars, read_config
from .join_progress import JoinProgress, ProgressHandler
from .params import Deployment, HostPort, IPAddress, Knob, agent_default, check_name, join_host_port

__all__ = ["join"]

_LOG_LEVELS = ("debug", "info", "warning", "error")
_HTTP_DEFAULT = join_host_port(agent_default("http_host"), agent_default("http_port"))
_MESH_DEFAULT = join_host_port(agent_default("mesh_host"), agent_default("mesh_port"))
_DATA_DEFAULT = join_host_port(agent_default("data_host"), agent_default("data_port"))


def _read_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> ConfigFile | None:
    """Eager callback of --config: the file's values become the defaults of every other flag."""
    if value is None:
        return None
    try:
        config_file = read_config(value, join, ctx)
    except ConfigFileError as exc:
        _usage_exit(ctx, str(exc))
    ctx.default_map = {**(ctx.default_map or {}), **config_file.defaults}
    return config_file


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),  # no checks here: read_config says what is wrong in one line
    envvar=CONFIG_ENV,
    show_envvar=True,
    is_eager=True,  # read before the other flags, whose defaults it sets
    callback=_read_config,
    help="TOML or YAML file of flags (keys are flag names); the command line and $MESHNODE_* win.",
)
@click.option(
    "--name",
    default=socket.gethostname,
    show_default="host name",
    callback=check_name,
    help="This node's name, shown in `meshnode peers` and on its log lines.",
)
@click.option(
    "--http",
    "http_addr",
    type=HostPort(),
    default=_HTTP_DEFAULT,
    show_default=True,
    help="HTTP API bind address.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    default=agent_default("tls_cert"),
    help="PEM certificate (chain): serve HTTPS on --http (with --tls-key).",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    default=agent_default("tls_key"),
    help="PEM private key of --tls-cert (unencrypted).",
)
@click.option(
    "--mesh",
    "mesh_addr",
    type=HostPort(),
    default=_MESH_DEFAULT,
    show_default=True,
    help="Membership (gossip) bind address.",
)
@click.option(
    "--data",
    "data_addr",
    type=HostPort(),
    default=_DATA_DEFAULT,
    show_default=True,
    help="Data-plane bind address (requests between nodes); port 0 picks a free one.",
)
@click.option(
    "--advertise-mesh",
    type=HostPort(),
    default=None,
    show_default="from --mesh",
    help="Mesh address peers dial, when not the bound one (NAT with a forwarded port, containers).",
)
@click.option(
    "--advertise-data",
    type=HostPort(),
    default=None,
    show_default="from --data",
    help="Data-plane address peers dial, when not the bound one (NAT with a forwarded port, containers).",
)
@click.option(
    "--seed",
    "seeds",
    type=HostPort(seed=True),
    multiple=True,
    help="Mesh address of a node to join; repeatable.",
)
@click.option(
    "--mdns/--no-mdns",
    default=agent_default("mdns"),
    show_default=True,
    help="Find and announce nodes on the LAN by mDNS.",
)
@click.option(
    "--interface",
    "interfaces",
    type=IPAddress(),
    multiple=True,
    help="Interface address for mDNS and the advertised address; repeatable.",
)
@click.option("--region", default=agent_default("region"), help="Locality label: region.")
@click.option("--zone", default=agent_default("zone"), help="Locality label: zone within the region.")
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default=agent_default("profile"),
    show_default=True,
    help="Membership timings: lan (memberlist defaults) or local (fast, one machine).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="$MESHNODE_HOME or ~/.meshnode",
    help="Where the node keeps its id and state.",
)
@click.option(
    "--deploy",
    "deploy",
    type=Deployment(),
    multiple=True,
    help="Pin a replica of deployment NAME running APP on this node; repeatable.",
)
@click.option(
    "--app-dir",
    "app_dirs",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    help="Folder that app files and config.yaml apps may come from (besides installed modules); repeatable.",
)
@click.option(
    "--allow-external-apps",
    is_flag=True,
    default=agent_default("allow_external_apps"),
    help="Run config.yaml apps declared by others (their commands run in a shell as this user).",
)
@click.option(
    "--mesh-id",
    default=agent_default("mesh_id"),
    show_default=True,
    help="Only nodes with the same mesh id talk to each other.",
)
@click.option(
    "--token",
    default=None,
    metavar="TOKEN",
    help=f"The mesh's join token (or ${TOKEN_ENV}); without one, the token file of the data dir or "
    "the meshnode home is used, else a new one is made and printed.",
)
@click.option(
    "--insecure-http",
    is_flag=True,
    default=agent_default("insecure_http"),
    help="Serve HTTP to every client with no API key, not only loopback ones (a trusted lab only).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file holding the mesh's join token.",
)
@click.option(
    "--set",
    "knobs",
    type=Knob(),
    multiple=True,
    help="Any number or switch of the agent's configuration, NAME=VALUE (docs/configuration.md); repeatable.",
)
@click.option(
    "--log-level",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="The least severe log lines written; debug adds a line per request.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="Log lines as text, or as JSON objects with the request id of each line a request caused.",
)
@click.pass_context
def join(
    ctx: click.Context,
    config_file: ConfigFile | None,
    name: str,
    http_addr: tuple[str, int],
    tls_cert: Path | None,
    tls_key: Path | None,
    mesh_addr: tuple[str, int],
    data_addr: tuple[str, int],
    advertise_mesh: tuple[str, int] | None,
    advertise_data: tuple[str, int] | None,
    seeds: tuple[tuple[str, int], ...],
    mdns: bool,
    interfaces: tuple[str, ...],
    region: str,
    zone: str,
    profile: str,
    data_dir: Path | None,
    deploy: tuple[str, ...],
    app_dirs: tuple[Path, ...],
    allow_external_apps: bool,
    mesh_id: str,
    token: str | None,
    token_file: Path | None,
    insecure_http: bool,
    knobs: tuple[tuple[str, Any], ...],
    log_level: str,
    log_format: LogFormat,
) -> None:
    """Run this machine's agent and join the mesh (until Ctrl-C or SIGTERM)."""
    token, token_file = _token_layers(ctx, token, token_file)
    if config_file is not None:
        # The file's knobs are merged under the command line's and the environment's, name by name.
        knobs = (*config_file.knobs, *knobs)
    try:
        config = AgentConfig(
            name=name,
            http_host=http_addr[0],
            http_port=http_addr[1],
            tls_cert=tls_cert,
            tls_key=tls_key,
            mesh_host=mesh_addr[0],
            mesh_port=mesh_addr[1],
            data_host=data_addr[0],
            data_port=data_addr[1],
            advertise_mesh=_advertised(advertise_mesh, "advertise_mesh"),
            advertise_data=_advertised(advertise_data, "advertise_data"),
            seeds=tuple(join_host_port(host, port) for host, port in seeds),
            mdns=mdns,
            interfaces=interfaces,
            region=region,
            zone=zone,
            profile=profile,
            mesh_id=mesh_id,
            deploy=deploy,
            app_dirs=app_dirs,
            allow_external_apps=allow_external_apps,
            token=None if token is None else check_token(token, "--token"),
            token_file=token_file,
            insecure_http=insecure_http,
        )
        if data_dir is not None:
            # Replaced only when given, so AgentConfig's default ($MESHNODE_HOME) decides otherwise.
            config = dataclasses.replace(config, data_dir=data_dir)
        agent_knobs = {name: value for name, value in knobs if not name.startswith("membership.")}
        membership_knobs = tuple(
            (name[11:], value) for name, value in knobs if name.startswith("membership.")
        )
        config = dataclasses.replace(config, **agent_knobs, membership_knobs=membership_knobs)
    except (ValueError, ConfigError) as exc:
        _usage_exit(ctx, str(exc))
    progress = _progress(config, log_format)
    handler = progress or log_handler(log_format, config.name)
    if configure_logging(log_level, handler) and progress is not None:
        progress.start()
    from ..agent import run_agent
    from ..serving.worker_process import inheritable_fds

    # What this process was started with (a lock file of flock, a pipe of a shell) stays its own:
    # workers and other children would otherwise hold it open as long as they run.
    for fd in inheritable_fds():
        os.set_inheritable(fd, False)

    try:
        code = run_agent(config)
    except (MeshnodeError, OSError) as exc:
        # Startup failures such as a port in use are the user's to fix, not a crash to report.
        raise click.ClickException(str(exc)) from exc
    finally:
        if progress is not None:
            progress.stop()
    ctx.exit(code)


add_env_vars(join)


def _token_layers(
    ctx: click.Context, token: str | None, token_file: Path | None
) -> tuple[str | None, Path | None]:
    """--token and --token-file, less what a config file says that a higher layer overrides.

    resolve_token ranks --token, --token-file, then $MESHNODE_TOKEN; a value from the file must not
    outrank the environment, nor a --token-file given on the command line or in the environment.
    """
    from_file = ParameterSource.DEFAULT_MAP
    if TOKEN_ENV in os.environ:
        token = None if ctx.get_parameter_source("token") is from_file else token
        token_file = None if ctx.get_parameter_source("token_file") is from_file else token_file
    given_file = ctx.get_parameter_source("token_file") in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    )
    if given_file and ctx.get_parameter_source("token") is from_file:
        token = None
    return token, token_file


def _progress(config: AgentConfig, log_format: LogFormat) -> ProgressHandler | None:
    """The status-line handler on a terminal with text logs; None elsewhere (plain lines say it)."""
    if log_format != "text" or not sys.stderr.isatty():
        return None
    from rich.console import Console

    scheme = "https" if config.tls_cert is not None else "http"
    progress = JoinProgress(config.seeds, config.mdns, scheme)
    return ProgressHandler(progress, Console(stderr=True, highlight=False))


def _advertised(address: tuple[str, int] | None, field_name: str) -> str:
    """An --advertise-* flag's address as "host:port"; AgentConfig's default when not given."""
    return agent_default(field_name) if address is None else join_host_port(*address)


def _usage_exit(ctx: click.Context, message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    ctx.exit(2)
