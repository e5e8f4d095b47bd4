"""The CLI's tables: drawn with rich on a terminal, plain aligned text anywhere else.

A command builds what it shows once, as a rich renderable, with a pure function of a node's answer
(``peers.peers_table``, ``deploy.deployments_view``, ``top_draw.render``), and ``show`` prints it:

- on a terminal, with rich's styles (bold headers, states in colour) and fitted to the terminal's
  width, long cells wrapping inside their column rather than the line wrapping under the table;
- piped or redirected, as ``plain`` text: no ANSI codes, every column as wide as its widest cell and
  never wrapped, trailing spaces trimmed, so ``grep``, ``awk`` and ``cut`` see one row per line and
  columns two spaces apart, as ``format_table`` has always laid them out.

rich is imported inside the functions: ``meshnode --help`` and the commands that print no table do
not pay for it.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType
    from rich.table import Table
    from rich.text import Text

__all__ = ["FitTable", "format_table", "plain", "show", "state_style", "styled", "table"]

# Wide enough that no table of a real mesh wraps when printed to a pipe; rich pads nothing to it
# (tables are not expanded), so it costs nothing.
PLAIN_WIDTH = 100_000

# Colours of the states a node, a replica or a job can be in; anything else is unstyled.
_STATE_STYLES = {
    "alive": "green",
    "ready": "green",
    "completed": "green",
    "direct": "",
    "suspect": "yellow",
    "starting": "yellow",
    "loading": "yellow",
    "standby": "cyan",
    "queued": "cyan",
    "running": "cyan",
    "draining": "yellow",
    "dead": "bold red",
    "failed": "bold red",
    "left": "dim",
    "stopped": "dim",
    "cancelled": "dim",
}


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The header and rows as aligned lines, two spaces apart (trailing spaces trimmed)."""
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def state_style(state: object) -> str:
    """The style of a state word (``alive``, ``ready``, ``dead``...): green is good, red is down."""
    return _STATE_STYLES.get(str(state), "")


def styled(text: object, style: str = "") -> Text:
    """``text`` as a cell in ``style`` (never read as rich markup: a name may hold brackets)."""
    from rich.text import Text

    return Text(str(text), style=style)


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[str | Text]],
    *,
    wrap: Collection[int] = (),
    right: Collection[int] = (),
    drop: Sequence[int] = (),
    title: str | None = None,
) -> FitTable:
    """A table in the CLI's one style: no borders, bold header, columns two spaces apart.

    Columns listed in ``wrap`` (by index) may wrap on a narrow terminal; the others keep their cells
    on one line. Columns in ``right`` are right-aligned (numbers). Where even so the table is wider
    than the terminal, the columns in ``drop`` are left out, in that order, until it fits.
    """
    cells = tuple(tuple(cell if not isinstance(cell, str) else styled(cell) for cell in row) for row in rows)
    return FitTable(tuple(header), cells, frozenset(wrap), frozenset(right), tuple(drop), title)


@dataclass(frozen=True)
class FitTable:
    """A table that leaves out its least useful columns where the width is short (``table``).

    Left to itself, rich squeezes every column of a table that is too wide, down to a few letters
    each, and then drops columns from the right, wherever they are: on an 80-column terminal the
    peers table lost its models and its own self marker. Here the caller says what goes first.
    """

    header: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]
    wrap: frozenset[int]
    right: frozenset[int]
    drop: tuple[int, ...]
    title: str | None = None

    def natural_width(self, columns: Sequence[int]) -> int:
        """Cells wide, with `columns` shown and nothing wrapped."""
        widths = [
            max([len(self.header[column]), *(row[column].cell_len for row in self.rows)])
            for column in columns
        ]
        return sum(widths) + 2 * max(len(widths) - 1, 0)

    def fitting(self, max_width: int) -> list[int]:
        """The columns shown in `max_width` cells: all, less ``drop`` in order while too wide."""
        shown = list(range(len(self.header)))
        for column in self.drop:
            if self.natural_width(shown) <= max_width:
                break
            shown.remove(column)
        return shown

    def rich_table(self, columns: Sequence[int]) -> Table:
        """The rich table of `columns`."""
        from rich.table import Table

        drawn = Table(
            box=None,
            pad_edge=False,
            padding=(0, 1),
            header_style="bold",
            title=self.title,
            title_justify="left",
            title_style="bold",
            show_edge=False,
        )
        for column in columns:
            drawn.add_column(
                self.header[column],
                no_wrap=column not in self.wrap,
                overflow="fold" if column in self.wrap else "ellipsis",
                justify="right" if column in self.right else "left",
            )
        for row in self.rows:
            drawn.add_row(*(row[column] for column in columns))
        return drawn

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Table]:
        yield self.rich_table(self.fitting(options.max_width))


def plain(renderable: RenderableType) -> str:
    """``renderable`` as plain text: no ANSI codes, nothing wrapped, trailing spaces trimmed."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=PLAIN_WIDTH,
        force_terminal=False,
        color_system=None,
        highlight=False,
        markup=False,
        emoji=False,
        legacy_windows=False,
        no_color=True,
    )
    console.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


def show(renderable: RenderableType, *, terminal: bool | None = None) -> None:
    """Print ``renderable`` to standard output: styled on a terminal, ``plain`` elsewhere."""
    if not (sys.stdout.isatty() if terminal is None else terminal):
        click.echo(plain(renderable))
        return
    from rich.console import Console

    Console(highlight=False, markup=False, emoji=False).print(renderable)
