"""Readers and writers for the DESI and Legacy Surveys file formats.

Their errors are :class:`FormatError` (defined in :mod:`astroclip_core.errors`, below ``fsio``).
"""

from astroclip_core.errors import FormatError

__all__ = ["FormatError"]
