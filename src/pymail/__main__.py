"""`python -m pymail` runs the pymail command."""

from pymail.cli import main

if __name__ == "__main__":
    main()
