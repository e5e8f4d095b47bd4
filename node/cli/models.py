"""``meshnode models``: local model helpers (today: the tiny offline diffusion pipeline)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def models() -> None:
    """Build or inspect models on this machine."""


@models.command("make-tiny")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
def make_tiny(directory: Path, seed: int) -> None:
    """Build the tiny offline Stable Diffusion pipeline (8 MB, random weights) in DIRECTORY."""
    try:
        from ..inference.tiny_diffusion import build_tiny_pipeline
    except ImportError as exc:
        raise click.ClickException(f"needs the torch extra (pip install 'meshnode[torch]'): {exc}") from exc
    try:
        path = build_tiny_pipeline(directory, seed=seed)
    except (OSError, ImportError) as exc:
        raise click.ClickException(f"cannot build the pipeline in {directory}: {exc}") from exc
    size = sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())
    click.echo(f"built the tiny pipeline in {path} ({size / 1e6:.1f} MB)")
    app = "meshnode.apps.text_to_image:TextToImage"
    click.echo(f"serve it: MESHNODE_T2I_MODEL={path} meshnode join --deploy t2i={app}")
