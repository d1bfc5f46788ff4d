"""The typed errors of eelbert-export. Each carries a one-line message for the user; the CLI
alone maps them to exit statuses (see ``cli.EXIT_STATUS``)."""


class EelbertError(Exception):
    """A failure the user can act on, reported as one line without a traceback."""


class InputError(EelbertError):
    """Bad input: a missing, unreadable or foreign file, or an invalid argument."""


class SpecError(InputError):
    """A hash, text or model spec that is invalid or newer than this code."""


class CheckpointError(InputError):
    """A file that is not a loadable eelbert-export checkpoint."""


class TargetMissed(EelbertError):
    """A measured figure misses the target it is checked against."""


class VerificationError(EelbertError):
    """An exported artifact fails its checks or disagrees with PyTorch beyond its tolerance;
    nothing was written."""
