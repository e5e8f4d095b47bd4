"""``meshnode models``: local model helpers (the tiny offline diffusion pipeline and language model).

``make-tiny --json`` prints where each model went and its size, instead of the sentences.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

# Where make-tiny puts the language model, inside DIRECTORY (the pipeline fills DIRECTORY itself, so
# that MESHNODE_T2I_MODEL=DIRECTORY keeps working; diffusers ignores the extra folder).
TINY_LM_FOLDER = "tiny-lm"


@click.group()
def models() -> None:
    """Build or inspect models on this machine."""


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
