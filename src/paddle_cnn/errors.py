"""User-facing errors: anything the user can fix (config, data, checkpoint, run directory)."""


class UserError(Exception):
    """An error caused by input the user can fix; the CLI prints it as one paragraph, exit code 2."""


class ConfigError(UserError):
    """A config file or override that is not valid."""


class DataError(UserError):
    """A dataset file that is missing, truncated, corrupt or of the wrong format."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, or belongs to another model."""


class RunDirError(UserError):
    """A run directory that cannot be used as asked (already finished, not resumable, ...)."""


class TrainingFailed(UserError):
    """Training stopped on a numerical failure (NaN/inf loss); the message says where."""


class ExportError(UserError):
    """An export that cannot be written as asked, or whose inference model failed its parity check."""


class ModelDirError(UserError):
    """An inference-model folder (`--model`) with missing, corrupt or changed files."""
