"""One rule for acquisition times, the same in every reader.

A timestamp is metadata: it never costs the signal. Readers pull the date and time fields
out of their own format and hand them to :func:`acquisition_start`, which decides:

- with a UTC offset (HL7 ``+0100``, DICOM ``TimezoneOffsetFromUTC``): ``start_time`` is
  that moment in UTC;
- without one (WFDB, EDF, GE MUSE, CardioSoft, Philips, DICOM without an offset): the
  wall-clock time is never placed on the UTC axis by guessing a zone. ``start_time`` is
  None and ``metadata["start_time_local"]`` holds it (ISO 8601, no offset);
- masked (de-identified exports write ``XXXX``), malformed, not a calendar date, an offset
  of a day or more, or outside years 1-9999 once in UTC: ``start_time`` is None and
  ``metadata["start_time_error"]`` names the field and the reason, never its value.

Reports carry ``start_time`` only (``window.start_time``, null in the last two cases).
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Dict, Optional, Tuple, Union

START_TIME_LOCAL = "start_time_local"
START_TIME_ERROR = "start_time_error"

StartTime = Tuple[Optional[dt.datetime], Dict[str, str]]

_UTC_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")
_MINUTES_PER_DAY = 24 * 60


def acquisition_start(field: str, year: Union[int, str], month: Union[int, str],
                      day: Union[int, str], hour: Union[int, str] = 0,
                      minute: Union[int, str] = 0, second: Union[int, str] = 0,
                      microsecond: Union[int, str] = 0,
                      utc_offset: Optional[str] = None) -> StartTime:
    """``(start_time, metadata)`` from a format's date and time fields (see the module
    docstring). ``field`` names where they came from, for the note; ``utc_offset`` is
    ``+HHMM`` / ``-HHMM`` text or None when the format states no zone."""
    try:
        moment = dt.datetime(int(year), int(month), int(day), int(hour), int(minute),
                             int(second), int(microsecond))
    except (ValueError, OverflowError):
        return time_problem(field, "is not a valid calendar date and time")
    if utc_offset is None:
        return None, {START_TIME_LOCAL: moment.isoformat()}
    match = _UTC_OFFSET.match(utc_offset.strip())
    if not match:
        return time_problem(field, "has a UTC offset that is not +HHMM or -HHMM")
    sign, hours, minutes = match.groups()
    offset_minutes = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or offset_minutes >= _MINUTES_PER_DAY:
        return time_problem(field, "has a UTC offset of a day or more, or over 59 minutes")
    zone = dt.timezone(dt.timedelta(minutes=-offset_minutes if sign == "-" else offset_minutes))
    try:
        return moment.replace(tzinfo=zone).astimezone(dt.timezone.utc), {}
    except OverflowError:
        return time_problem(field, "falls outside years 1-9999 in UTC")


def time_problem(field: str, reason: str) -> StartTime:
    """No start time, and the note saying which field was unusable and why."""
    return None, {START_TIME_ERROR: f"{field} {reason}; start time left out"}
