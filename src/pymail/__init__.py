"""pymail: the sending side of mailx, relayed over SMTPS or STARTTLS."""

__version__ = "0.1.0"
