"""Subcommands of the ``ecgd`` CLI, one module each: ``register(subparsers)`` adds the
parser and sets ``handler``; the handler takes the parsed args and returns an exit code."""
