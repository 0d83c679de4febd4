"""Reviewed specimens as HL7 v2.5.1 ORU^R01 messages, built and validated with hl7apy.

One message per specimen: MSH, PID (PID-3 = the specimen id), ORC + OBR (the ANA IIF order, result status F,
or C when an earlier review of the specimen was already sent), NTE (the reviewer's comment), then OBX:
one `ANA-PATTERN` per pattern (CWE: ICAP code group ^ ICAP name ^ 99ICAP ^ hep2edge class ^ class ^ 99H2E,
sub-ids 1, 2, ... for mixed patterns), `ANA-INTENSITY`, `ANA-REVIEW` (confirmed / corrected),
`ANA-REVIEWER` and `ANA-MODEL` (the model id). Every OBX names the reviewer as responsible observer
(OBX-16) and the review time (OBX-19). Segments end with CR, HL7's terminator; messages follow one another.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group, Message
from hl7apy.parser import parse_message

from hep2edge import __version__
from hep2edge.review.icap import ICAP
from hep2edge.review.verdicts import Review
from hep2edge.review.worklist import Entry

VERSION = "2.5.1"
SENDER = "HEP2EDGE"
ORDER = "ANA-IIF^ANA IIF on HEp-2 cells^L"
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


@dataclass(frozen=True)
class Observation:
    """One OBX: value type, identifier (code^text^system), sub-id and value (already HL7-encoded)."""

    kind: str
    identifier: str
    value: str
    sub_id: str = ""


def text(value: str) -> str:
    """Free text made safe for an HL7 field: delimiters escaped, line breaks as spaces."""
    for raw, escaped in _ESCAPES:
        value = value.replace(raw, escaped)
    return " ".join(value.split())


def timestamp(epoch: float) -> str:
    """Epoch seconds -> HL7 DTM in UTC (YYYYMMDDHHMMSS+0000)."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y%m%d%H%M%S+0000")


def observations(entry: Entry, review: Review) -> list[Observation]:
    """The OBX contents of a reviewed specimen."""
    found = [Observation("CWE", "ANA-PATTERN^ANA IIF pattern (HEp-2)^L",
                         f"{ICAP[name].label}^{ICAP[name].name}^99ICAP^{name}^{name}^99H2E", str(index))
             for index, name in enumerate(review.after.patterns, start=1)]
    intensity = review.after.intensity
    found += [
        Observation("CWE", "ANA-INTENSITY^ANA IIF fluorescence intensity^L", f"{intensity}^{intensity}^99H2E"),
        Observation("ST", "ANA-REVIEW^Operator review of the model result^L", review.action),
        Observation("ST", "ANA-REVIEWER^Reviewed by^L", text(review.reviewer)),
        Observation("ST", "ANA-MODEL^Analysing model (hep2edge)^L", text(entry.model_id or "unknown")),
    ]
    return found


def oru_r01(entry: Entry, control_id: str, corrected: bool, now: float) -> str:
    """The ER7 text (CR-separated segments) of one specimen's ORU^R01 message, validated."""
    review = entry.review
    assert review is not None, "only reviewed specimens are exported"
    message = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    message.msh.msh_3 = SENDER
    message.msh.msh_7 = timestamp(now)
    message.msh.msh_9 = "ORU^R01^ORU_R01"
    message.msh.msh_10 = control_id
    message.msh.msh_11 = "P"
    message.msh.msh_18 = "UNICODE UTF-8"
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_3 = f"{text(entry.key)}^^^{SENDER}^PI"
    patient.pid.pid_5 = "UNKNOWN"
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    _order(order, entry, review, "C" if corrected else "F")
    for index, observation in enumerate(observations(entry, review), start=1):
        _obx(order.add_group("ORU_R01_OBSERVATION"), index, observation, review, entry.arrived,
             "C" if corrected else "F")
    message.validate()
    return str(message.to_er7())


def _order(order: Group, entry: Entry, review: Review, status: str) -> None:
    filler = f"{text(entry.key)}^{SENDER}"
    order.orc.orc_1 = "RE"
    order.orc.orc_3 = filler
    order.obr.obr_1 = "1"
    order.obr.obr_3 = filler
    order.obr.obr_4 = ORDER
    order.obr.obr_7 = timestamp(entry.arrived)
    order.obr.obr_22 = timestamp(review.at)
    order.obr.obr_25 = status
    if review.comment:
        order.add_segment("NTE").nte_3 = text(review.comment)


def _obx(group: Group, index: int, observation: Observation, review: Review, observed: float, status: str) -> None:
    obx = group.obx
    obx.obx_1 = str(index)
    obx.obx_2 = observation.kind
    obx.obx_3 = observation.identifier
    if observation.sub_id:
        obx.obx_4 = observation.sub_id
    obx.obx_5 = observation.value
    obx.obx_11 = status
    obx.obx_14 = timestamp(observed)
    obx.obx_16 = f"^{text(review.reviewer)}"
    obx.obx_19 = timestamp(review.at)
    obx.obx_17 = f"HEP2EDGE^hep2edge {__version__} + operator review^L"


def split_messages(data: str) -> list[str]:
    """A file of ER7 messages (CR, LF or CRLF between segments) -> one CR-separated string per message."""
    normalised = re.sub(r"\r\n|\n|\r", "\r", data).strip("\r")
    return [("MSH|" + part).rstrip("\r") for part in re.split(r"(?:^|\r)MSH\|", normalised) if part]


def parse(data: str) -> list[Message]:
    """Parse and validate (hl7apy, strict) every message of an export file."""
    messages = []
    for er7 in split_messages(data):
        message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
        messages.append(message)
    return messages
