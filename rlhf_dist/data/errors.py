"""Errors of the data pipeline.

:class:`DataError` is what users see: a bad file, split or row, with a message that names the
file (or dataset), the 0-based row index and the field.  :class:`RowError` is raised by the
pure row-level helpers, which do not know where the row came from; the dataset builders
catch it and re-raise it as a :class:`DataError` (or count the row as skipped).
"""

from __future__ import annotations


class DataError(ValueError):
    """A data problem the user must fix: missing file, unknown split, bad row.

    For a bad row, ``source``, ``row`` and ``field`` are set and the message reads
    ``"<source> row <row>, field '<field>': <reason>"``.
    """

    def __init__(
        self,
        message: str,
        source: str | None = None,
        row: int | None = None,
        field: str | None = None,
        reason: str | None = None,
    ):
        super().__init__(message)
        self.source, self.row, self.field, self.reason = source, row, field, reason

    @classmethod
    def bad_row(cls, source: str, row: int, field: str, reason: str) -> "DataError":
        return cls(f"{source} row {row}, field '{field}': {reason}", source, row, field, reason)


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A local data path that does not exist (catchable as ``FileNotFoundError`` too)."""


class RowError(Exception):
    """A bad field of one row; ``field`` is the column name (``responses[2]`` for lists)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"field '{field}': {reason}")
        self.field, self.reason = field, reason


class MalformedLines(DataError):
    """JSON Lines that cannot be rows: not UTF-8, not JSON, not an object, or a field of another
    JSON type than the other rows'; ``reasons`` names each (file and 1-based line number);
    ``rows`` holds the good lines (``data.on_bad_row=skip`` trains on them)."""

    def __init__(self, path: str, reasons: list, rows: list):
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        super().__init__(f"{reasons[0]}{more}; fix the file or set data.on_bad_row=skip")
        self.reasons, self.rows = reasons, rows
