"""The ``puente`` subcommands, one module per group.

Each module has ``register(subparsers)``, which adds its subcommands and sets
``handler`` (a function taking the parsed arguments and returning an exit
code) as a parser default. node.commands.cli lists the modules.
"""
