"""``python -m meshnode``: the same command line as the ``meshnode`` console script."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="meshnode")
