"""Why an upload or a query over a dataset is refused."""

from __future__ import annotations


class IngestError(ValueError):
    """An upload cannot become a dataset.

    `reason` is the human text (it names the line, the column or the byte when it can);
    `code` is a stable machine word for it: ``empty``, ``no_header``, ``empty_column_name``,
    ``duplicate_columns``, ``ragged``, ``encoding``, ``malformed``, ``unknown_format`` or
    ``corrupt_parquet``, ``nul`` (a NUL in a column name) or ``too_large`` (past a
    `DatasetLimits` bound: `LimitExceeded`); `line` is the 1-based physical line of the file
    when one is to blame.
    """

    def __init__(self, reason: str, *, code: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.line = line


class QueryError(ValueError):
    """A preview or an aggregate cannot run as asked.

    `field` names the input to blame (``fn``, ``column``, ``where``, ``group_by`` or
    ``limit``) and `reason` (also `str(error)`) says why.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
