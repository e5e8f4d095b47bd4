"""The ``meshnode`` command group: one command module each, registered here.

Heavy modules (the agent, zeroconf, torch) are imported inside the commands, so ``meshnode --help``
stays instant.
"""

from __future__ import annotations

import click

from .. import __version__
from .demo.command import demo
from .deploy import deploy, deployments, undeploy
from .doctor import doctor
from .jobs import jobs
from .join import join
from .keys import keys
from .model_pull import pull as model_pull
from .models import models
from .peers import peers
from .predict import predict
from .token import token
from .top import top

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshnode")
def main() -> None:
    """meshnode: a leaderless model-serving mesh; every machine runs the same peer agent."""


for _command in (
    join,
    peers,
    top,
    predict,
    deploy,
    undeploy,
    deployments,
    jobs,
    models,
    demo,
    token,
    keys,
    doctor,
):
    main.add_command(_command)
models.add_command(model_pull)  # its own module: the pull's polling and display
