"""`python -m acneops ...` is the same as the `acneops` command (and what `torchrun -m acneops` runs)."""

from acneops.cli import app

if __name__ == "__main__":
    app()
