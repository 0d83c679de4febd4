"""The one table from hep2edge's 7 pattern classes to the ICAP anti-cell (AC) codes (anapatterns.org).

A class can stand for several ICAP patterns (speckled covers AC-2, AC-4 and AC-5); ICAP writes such a group
as `AC-2,4,5` next to the common name, and so do the worklist, the HL7 export and the CSV export.
"""

from __future__ import annotations

from dataclasses import dataclass

from hep2edge.labels import PATTERNS


@dataclass(frozen=True)
class IcapPattern:
    """The ICAP codes one hep2edge class maps to, and its common name."""

    codes: tuple[str, ...]
    name: str

    @property
    def label(self) -> str:
        """ICAP's short form: ('AC-2', 'AC-4', 'AC-5') -> 'AC-2,4,5'."""
        first, *rest = self.codes
        return ",".join([first, *(code.removeprefix("AC-") for code in rest)])


ICAP: dict[str, IcapPattern] = {
    "homogeneous": IcapPattern(("AC-1",), "Nuclear homogeneous"),
    "speckled": IcapPattern(("AC-2", "AC-4", "AC-5"), "Nuclear speckled"),
    "nucleolar": IcapPattern(("AC-8", "AC-9", "AC-10"), "Nucleolar"),
    "centromere": IcapPattern(("AC-3",), "Centromere"),
    "golgi": IcapPattern(("AC-22",), "Polar/Golgi-like"),
    "numem": IcapPattern(("AC-11", "AC-12"), "Nuclear envelope"),
    "mitsp": IcapPattern(("AC-25",), "Mitotic spindle apparatus"),  # NuMA-like AC-26 is its pole form
}
NEGATIVE = IcapPattern(("AC-0",), "Negative")  # not a class the model predicts; here for completeness
assert tuple(ICAP) == PATTERNS, "ICAP table and hep2edge.labels.PATTERNS disagree"


def icap_label(pattern: str) -> str:
    """'speckled' -> 'AC-2,4,5'."""
    return ICAP[pattern].label


def describe(pattern: str) -> str:
    """'speckled' -> 'Nuclear speckled (AC-2,4,5)': the common name with its ICAP codes beside it."""
    entry = ICAP[pattern]
    return f"{entry.name} ({entry.label})"
