"""The gateway's own exception family."""


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration file is missing, unreadable or invalid.

    The message names the file, the key and what is expected.
    """


class SiteControllerError(GatewayError):
    """A site controller answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class InputError(GatewayError):
    """Bad input on the command line or in a data file."""
