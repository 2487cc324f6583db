"""The core's own exception types.

Only `imageapi.cli` turns these into a message and an exit code, and only `imageapi.server`
turns them into HTTP errors. Each type carries a stable machine-readable `code`.
"""

from __future__ import annotations


class ImageapiError(Exception):
    """Base of every error the core raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ImageapiError):
    """A setting has a bad value. `setting` names it (e.g. THUMBNAILS)."""

    code = "bad_config"

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class UsageError(ImageapiError):
    """A request that cannot be carried out as asked (bad argument, bad value)."""

    code = "bad_request"


class ConflictError(UsageError):
    """A request that clashes with what is stored (e.g. a person's name that another person has)."""

    code = "conflict"


class NotFoundError(ImageapiError):
    """A library, file or row that does not exist."""

    code = "not_found"


class PathOutsideLibraryError(ImageapiError):
    """A client path that would leave the library roots."""

    code = "bad_path"


class LockedError(ImageapiError):
    """Another imageapi run already holds the database's job lock."""

    code = "locked"


class LeaseHeldError(LockedError):
    """A lease of the job lock (a library's scans, the drains) is held by another live run:
    its job, pid and host."""

    def __init__(self, message: str, job: str, pid: int, host: str) -> None:
        super().__init__(message)
        self.job, self.pid, self.host = job, pid, host


class LeaseLostError(LockedError):
    """The lease a job was working under was taken over (it could not be renewed for longer than
    the lease): the job was stopped."""


class MediaError(ImageapiError):
    """A file could not be read, decoded or converted."""

    code = "media_error"


class UnsupportedMediaError(MediaError):
    """A file that is readable but has nothing we can make a picture from."""

    code = "unsupported_media"


class ToolError(ImageapiError):
    """An external tool (ffmpeg, ffprobe, exiftool) failed or timed out."""

    code = "tool_failed"


class ServiceError(ImageapiError):
    """An external HTTP service failed."""

    code = "service_unavailable"


class DatabaseError(ImageapiError):
    """The database cannot be used as it is: not a program bug, but the disk or the file."""

    code = "database_error"


class DatabaseFullError(DatabaseError):
    """A write failed because the database or the disk holding it is full (SQLITE_FULL). The
    transaction was rolled back; what was committed before it is kept."""

    code = "database_full"


class DatabaseCorruptError(DatabaseError):
    """The database file is damaged or is not an SQLite database at all."""

    code = "database_corrupt"
