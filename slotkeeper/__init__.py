"""slotkeeper: the ``slotkeeper`` command and its subcommands."""

__version__ = "0.1.0"
