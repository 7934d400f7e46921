"""Errors shared by every layer, from ``fsio`` up (so that the lowest layer can raise them)."""


class FormatError(ValueError):
    """A file is not what it claims to be.

    The message always names the file (or "<bytes>" for in-memory input) and what is wrong:
    a missing HDU or column, wrong bands, wrong shape, truncated data, not FITS at all, a
    Parquet page whose checksum does not match.
    """

    def __init__(self, source: object, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
