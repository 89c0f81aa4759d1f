"""Named errors for bad input; every message carries the offending value."""
from __future__ import annotations


class VoiceGenderError(Exception):
    """Base class of every error the core raises on purpose."""


class InvalidAudio(VoiceGenderError):
    """A file that cannot be used as a recording; ``reason`` is a short code."""

    reason = "invalid_audio"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class EmptyFile(InvalidAudio):
    reason = "empty_file"


class UnreadableAudio(InvalidAudio):
    """Not audio, truncated, or a format the decoder does not know."""

    reason = "unreadable_audio"


class NoSamples(InvalidAudio):
    reason = "no_samples"


class NonFiniteSamples(InvalidAudio):
    reason = "non_finite_samples"


class SilentAudio(InvalidAudio):
    reason = "silent_audio"


class TooShort(InvalidAudio):
    reason = "too_short"


class TooLong(InvalidAudio):
    reason = "too_long"


class UnsupportedSampleRate(InvalidAudio):
    reason = "unsupported_sample_rate"


class UnsupportedFormat(InvalidAudio):
    """A submitted file whose extension is not one we decode (a nested archive, a document)."""

    reason = "unsupported_format"


class NotAFile(InvalidAudio):
    """A submitted entry that is not a regular file: a symbolic link, a directory named like a file."""

    reason = "not_a_file"


class RejectedArchiveEntry(InvalidAudio):
    """A zip entry left unextracted on its own account (expands like a bomb, encrypted, corrupt data)."""

    reason = "rejected_archive_entry"


class InvalidCheckpoint(VoiceGenderError):
    """A model file that is missing, corrupt or of an unknown format."""


class InvalidDataset(VoiceGenderError):
    """A training source that cannot be read (layout, manifest, labels)."""
