"""Data releases: a DESI release name always travels with its spectroscopic production."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Release:
    """One DESI data release, e.g. ``Release("edr", "fuji")``.

    ``name`` is the public folder (``<root>/<name>/spectro/redux/<specprod>/``) and
    ``specprod`` the spectroscopic production inside it.
    """

    name: str
    specprod: str

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("specprod", self.specprod)):
            if not value or not value.replace("_", "").isalnum() or value != value.lower():
                raise ValueError(f"release {field} {value!r} must be a lower-case identifier")


# The public releases the project knows; the sample sky uses the same names and layouts.
KNOWN_RELEASES: dict[str, Release] = {
    "edr": Release("edr", "fuji"),
    "dr1": Release("dr1", "iron"),
}


def release_from_name(name: str) -> Release:
    """Return the known release called ``name`` (``edr`` or ``dr1``); raise ValueError otherwise."""
    try:
        return KNOWN_RELEASES[name]
    except KeyError:
        raise ValueError(
            f"unknown release {name!r}; known releases are {sorted(KNOWN_RELEASES)}"
        ) from None
