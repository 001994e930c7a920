"""`python -m pymail` runs the pymail command."""

from pymail.scripts import pymail

if __name__ == "__main__":
    pymail()
