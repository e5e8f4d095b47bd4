"""``python -m meshnode``: the same command line as the ``meshnode`` console script."""

from .cli.main import main

if __name__ == "__main__":
    main(prog_name="meshnode")
