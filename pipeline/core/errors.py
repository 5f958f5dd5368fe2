"""The one exception type the CLI turns into a clean message and a non-zero exit."""


class HydraMixError(Exception):
    """A problem the user can fix (bad input, missing file, wrong params); its message says what and where."""


class DownloadError(HydraMixError):
    """A file could not be downloaded (no network, server error); the message says where to place it by hand."""


class ConfigError(HydraMixError):
    """A params section that does not match its typed config (unknown, missing or mistyped key)."""


class WriteError(HydraMixError):
    """An output could not be written (read-only folder, full disk, a file where a folder should be). The message
    names the output; a stage adds what it kept, so that the user knows what a rerun will redo."""
