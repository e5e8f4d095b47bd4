"""``meshnode models``: the mesh's model stores, and the tiny offline models.

- ``ls``: which node holds which model, and who pulls it (``GET /v1/models/store`` of any node).
- ``add DIR --name N``: copies (or hard-links) a folder into this machine's store, hashing it, in
  this process with its user's own file permissions, then asks the local agent to re-read its store
  and gossip it (``POST /v1/models/store``). Adding is never an HTTP route: a path sent over
  the network would let a caller read any file the agent can (docs/models.md, "Security").
- ``rm N``: removes a model from every node that holds it (``--on NODE``: from one).
- ``make-tiny``: builds the tiny diffusion pipeline and language model.

``--json`` on each prints the node's answer (or, for ``add``, the model and whether a node saw it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from ..config import DEFAULT_NODE_URL, default_data_dir
from ..mesh.model_manifest import short
from ..models.store import ModelStore, StoredModel
from .node_http import NodeAccess, access_options, node_option, request_node
from .text_table import show, styled, table

# Where make-tiny puts the language model, inside DIRECTORY (the pipeline fills DIRECTORY itself, so
# that MESHNODE_T2I_MODEL=DIRECTORY keeps working; diffusers ignores the extra folder).
TINY_LM_FOLDER = "tiny-lm"


TIMEOUT_S = 10.0
# A removal deletes files on every holder (each within its 30 s); a rescan stats every file here.
CHANGE_TIMEOUT_S = 60.0
STORE_FOLDER = "model-store"


@click.group()
def models() -> None:
    """The mesh's model stores: list, add and remove models; build the tiny ones."""


@models.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the GET /v1/models/store body.")
@node_option
@access_options
def list_models(as_json: bool, node_url: str, access: NodeAccess) -> None:
    """Every model in the mesh's stores: digest, size, the nodes holding it, the nodes pulling it."""
    body = request_node("GET", node_url, "/v1/models/store", access, timeout_s=TIMEOUT_S).json()
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    if not body["models"]:
        click.echo("no model in the mesh's stores (add one: meshnode models add DIR --name NAME)", err=True)
        return
    show(store_table(body))


def store_table(body: dict[str, Any]) -> Any:
    """The rows of ``models ls``: NAME DIGEST SIZE HOLDERS PULLING."""
    rows = [
        (
            row["name"],
            row["digest"],
            _size(row["bytes"]),
            ", ".join(row["holders"]) or styled("none alive", "bold red"),
            ", ".join(f"{pull['node']} {_share(pull['done'], pull['total'])}" for pull in row["pulling"])
            or "-",
        )
        for row in body["models"]
    ]
    return table(("NAME", "DIGEST", "SIZE", "HOLDERS", "PULLING"), rows, wrap={3, 4}, right={2}, drop=(1,))


@models.command("add")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--name", required=True, help="The model's name in the mesh (like a deployment name).")
@click.option("--link", is_flag=True, help="Hard-link the files instead of copying (same filesystem only).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="$MESHNODE_HOME or ~/.meshnode",
    help="The node's data dir: the model goes to its model-store folder.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the model added and whether a node saw it.")
@node_option
@access_options
def add(
    directory: Path,
    name: str,
    link: bool,
    data_dir: Path | None,
    as_json: bool,
    node_url: str,
    access: NodeAccess,
) -> None:
    """Copy the folder DIRECTORY into this machine's model store as --name, then tell the node."""
    store = ModelStore((data_dir or default_data_dir()) / STORE_FOLDER)
    try:
        store.scan()
        model = store.add(name, directory, link=link)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot add {directory} as {name!r}: {exc}") from exc
    seen = _rescan(node_url, access, model)
    if as_json:
        described = {"name": model.name, "digest": model.digest, "bytes": model.total_bytes}
        click.echo(json.dumps({**described, "files": model.file_count, "node": seen}, indent=2))
        return
    click.echo(
        f"added {model.name} ({short(model.digest)}, {_size(model.total_bytes)}, {model.file_count} files)"
        f" to {model.path}"
    )


def _rescan(node_url: str, access: NodeAccess, model: StoredModel) -> str:
    """Ask the node to re-read its store: "seen", "other" (another data dir) or "none" (no node)."""
    try:
        answer = request_node("POST", node_url, "/v1/models/store", access, timeout_s=CHANGE_TIMEOUT_S).json()
    except click.ClickException as exc:
        local = node_url == DEFAULT_NODE_URL
        click.echo(f"no node answered ({exc.message})", err=True)
        click.echo(
            "the model is gossiped when the node starts" if local else "the node gossips it once it rescans",
            err=True,
        )
        return "none"
    if any(row.get("digest") == model.digest for row in answer.get("local", ())):
        click.echo(f"the node at {node_url} holds it now and gossips it to the mesh", err=True)
        return "seen"
    click.echo(
        f"the node at {node_url} does not see it: it keeps its store in another data dir (--data-dir)",
        err=True,
    )
    return "other"


@models.command("rm")
@click.argument("name")
@click.option("--on", "on_node", default=None, metavar="NODE", help="Remove it from this node only.")
@click.option("--json", "as_json", is_flag=True, help="Print the node's answer.")
@node_option
@access_options
def remove(name: str, on_node: str | None, as_json: bool, node_url: str, access: NodeAccess) -> None:
    """Remove model NAME from every node that holds it (or from --on NODE)."""
    params = {} if on_node is None else {"node": on_node}
    path = f"/v1/models/store/{quote(name, safe='')}"
    body = request_node("DELETE", node_url, path, access, timeout_s=CHANGE_TIMEOUT_S, params=params).json()
    if as_json:
        click.echo(json.dumps(body, indent=2))
    elif body["removed"]:
        click.echo(f"removed {name} from {', '.join(body['removed'])}")
    for failure in body["failed"]:
        click.echo(f"could not remove {name} from {failure['node']}: {failure['error']}", err=True)
    if body["failed"]:
        raise SystemExit(1)


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _share(done: int, total: int) -> str:
    return f"{100 * done // total}%" if total else "0%"


@models.command("make-tiny")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--json", "as_json", is_flag=True, help="Print each model's path and size as JSON.")
def make_tiny(directory: Path, seed: int, as_json: bool) -> None:
    """Build the tiny offline Stable Diffusion pipeline (8 MB) in DIRECTORY and the tiny language
    model (0.5 MB) in DIRECTORY/tiny-lm, both with random weights."""
    try:
        from ..inference.tiny_diffusion import build_tiny_pipeline
        from ..inference.tiny_lm import build_tiny_lm
    except ImportError as exc:
        raise click.ClickException(f"needs the torch extra (pip install 'meshnode[torch]'): {exc}") from exc
    try:
        path = build_tiny_pipeline(directory, seed=seed)
        lm_path = build_tiny_lm(directory / TINY_LM_FOLDER, seed=seed)
    except (OSError, ImportError) as exc:
        raise click.ClickException(f"cannot build the tiny models in {directory}: {exc}") from exc
    t2i = "meshnode.apps.text_to_image:TextToImage"
    lm = "meshnode.apps.text_generation:TextGeneration"
    pipeline_mb, lm_mb = _megabytes(path, skip=lm_path), _megabytes(lm_path)
    if as_json:
        built = {
            "pipeline": {"path": str(path), "megabytes": round(pipeline_mb, 3), "app": t2i},
            "language_model": {"path": str(lm_path), "megabytes": round(lm_mb, 3), "app": lm},
        }
        click.echo(json.dumps(built, indent=2))
        return
    click.echo(f"built the tiny pipeline in {path} ({pipeline_mb:.1f} MB)")
    click.echo(f"built the tiny language model in {lm_path} ({lm_mb:.1f} MB)")
    click.echo(f"serve them: MESHNODE_T2I_MODEL={path} meshnode join --deploy t2i={t2i}")
    click.echo(f"            MESHNODE_LM_MODEL={lm_path} meshnode join --deploy chat={lm}")


def _megabytes(folder: Path, skip: Path | None = None) -> float:
    files = (f for f in folder.rglob("*") if f.is_file() and (skip is None or skip not in f.parents))
    return sum(f.stat().st_size for f in files) / 1e6
