"""``python -m ragcun`` (and ``torchrun -m ragcun train ...``)."""

from ragcun.cli import main

if __name__ == "__main__":
    main()
