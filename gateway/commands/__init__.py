"""The commands of ``dr-gateway``: one module per command or command group.

``gateway/cli.py`` holds the argument parser and imports a command's module only when that
command runs, so that a command loads only the code it uses (``dr-gateway feasibility`` needs
neither SQL nor OpenADR). Each module's ``run(args)`` returns the exit code; a bad input or
configuration raises :class:`gateway.errors.InputError` or :class:`gateway.errors.ConfigError`
(exit 2), a failure while running :class:`gateway.errors.GatewayError` (exit 1).
``options`` and ``report_kinds`` are what the parser itself needs, and stay light.
"""
