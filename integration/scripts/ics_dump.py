#!/usr/bin/env python3
"""Parses stored mails (.eml) and their calendar invitations for the integration tests.

    python3 ics_dump.py FILE.eml...

Prints one JSON array on stdout, one object per input file, in argument order:

  {"file", "to": [addr-spec…], "from", "subject", "message_id", "idempotency_key",
   "headers": [header names in order], "text", "html",
   "ics": null | {"method", "events": [event…], "timezones": [TZID…], "raw"},
   "ics_error": null | message, "error": null | message}

with each event {"uid", "sequence" (int), "summary", "dtstart", "tzid", "dtend", "rrule",
"exdates": [...], "recurrence_id", "status", "organizer", "attendees": [...], "url"}.
Dates and times are ISO 8601 (`date.isoformat()` / `datetime.isoformat()`: a DTSTART with a
TZID carries its UTC offset, a UTC one `+00:00`, a floating one none); "tzid" is DTSTART's TZID
parameter. "rrule" is the first RRULE as RFC 5545 text (e.g. FREQ=WEEKLY;COUNT=4;BYDAY=MO,WE).
"organizer" is the ORGANIZER value as written (a `mailto:` URI); "attendees" are the ATTENDEE
addresses lower-cased without `mailto:`. The calendar is the first text/calendar part (an
attachment such as invite.ics, or inline; also application/ics or any *.ics attachment).
An invitation that does not parse gives "ics": null and "ics_error"; a file that cannot be
read or parsed at all gives "error". Nothing makes the script fail on a bad input.
"""

import email
import email.policy
import json
import sys

try:
    import icalendar
except ImportError as e:  # pragma: no cover - environment problem
    icalendar = None
    ICALENDAR_IMPORT_ERROR = f"cannot import icalendar ({e}): run scripts/services.sh or pip install icalendar"


def text_or_none(value):
    if value is None:
        return None
    s = str(value).strip()
    return s


def header(msg, name):
    try:
        return text_or_none(msg.get(name))
    except Exception as e:  # a malformed header: its raw text
        raw = msg.get_all(name, failobj=None)
        return str(raw[0]) if raw else f"<unparsable: {e}>"


def addresses(msg, name):
    out = []
    try:
        for h in msg.get_all(name, failobj=[]):
            addrs = getattr(h, "addresses", None)
            if addrs is None:
                out.extend(a for _, a in email.utils.getaddresses([str(h)]) if a)
            else:
                out.extend(a.addr_spec for a in addrs if a.addr_spec)
    except Exception:
        out.extend(a for _, a in email.utils.getaddresses([str(h) for h in msg.get_all(name, failobj=[])]) if a)
    return out


def body(msg, subtype):
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:
        part = None
    if part is None:
        return None
    try:
        content = part.get_content()
    except Exception:
        content = part.get_payload(decode=True) or b""
    if isinstance(content, bytes):
        content = content.decode(part.get_content_charset() or "utf-8", "replace")
    return content


def calendar_part(msg):
    fallback = None
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/calendar":
            return part
        filename = (part.get_filename() or "").lower()
        if fallback is None and (ctype == "application/ics" or filename.endswith(".ics")):
            fallback = part
    return fallback


def iso(prop):
    if prop is None:
        return None
    dt = getattr(prop, "dt", prop)
    return dt.isoformat() if hasattr(dt, "isoformat") else str(dt)


def as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def mailto(value):
    s = str(value).strip()
    if s.lower().startswith("mailto:"):
        s = s[len("mailto:"):]
    return s.lower()


def event(ev):
    dtstart = ev.get("DTSTART")
    tzid = None
    if dtstart is not None:
        tzid = dtstart.params.get("TZID")
        if tzid is None:  # a parser that moved it off the parameters: the value's zone name
            tz = getattr(getattr(dtstart, "dt", None), "tzinfo", None)
            key = getattr(tz, "key", None) or getattr(tz, "zone", None)
            tzid = key if key and key != "UTC" else None
    rrules = as_list(ev.get("RRULE"))
    exdates = []
    for exdate in as_list(ev.get("EXDATE")):
        dts = getattr(exdate, "dts", None)
        exdates.extend(iso(d) for d in (dts if dts is not None else [exdate]))
    sequence = ev.get("SEQUENCE")
    organizer = ev.get("ORGANIZER")
    return {
        "uid": text_or_none(ev.get("UID")),
        "sequence": int(sequence) if sequence is not None else None,
        "summary": text_or_none(ev.get("SUMMARY")),
        "dtstart": iso(dtstart),
        "tzid": text_or_none(tzid),
        "dtend": iso(ev.get("DTEND")),
        "rrule": rrules[0].to_ical().decode() if rrules else None,
        "exdates": exdates,
        "recurrence_id": iso(ev.get("RECURRENCE-ID")),
        "status": text_or_none(ev.get("STATUS")),
        "organizer": text_or_none(organizer),
        "attendees": [mailto(a) for a in as_list(ev.get("ATTENDEE"))],
        "url": text_or_none(ev.get("URL")),
    }


def ics(part):
    content = part.get_content()
    if isinstance(content, bytes):
        content = content.decode(part.get_content_charset() or "utf-8", "replace")
    if icalendar is None:
        raise RuntimeError(ICALENDAR_IMPORT_ERROR)
    cal = icalendar.Calendar.from_ical(content)
    return {
        "method": text_or_none(cal.get("METHOD")),
        "events": [event(ev) for ev in cal.walk("VEVENT")],
        "timezones": [str(tz.get("TZID")) for tz in cal.walk("VTIMEZONE")],
        "raw": content,
    }


def dump(path):
    out = {
        "file": path, "to": [], "from": None, "subject": None, "message_id": None,
        "idempotency_key": None, "headers": [], "text": None, "html": None,
        "ics": None, "ics_error": None, "error": None,
    }
    try:
        with open(path, "rb") as f:
            msg = email.message_from_bytes(f.read(), policy=email.policy.default)
        out["to"] = addresses(msg, "To")
        out["from"] = header(msg, "From")
        out["subject"] = header(msg, "Subject")
        out["message_id"] = header(msg, "Message-ID")
        out["idempotency_key"] = header(msg, "X-Parley-Idempotency-Key")
        out["headers"] = list(msg.keys())
        out["text"] = body(msg, "plain")
        out["html"] = body(msg, "html")
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    try:
        part = calendar_part(msg)
        if part is not None:
            out["ics"] = ics(part)
    except Exception as e:
        out["ics_error"] = f"{type(e).__name__}: {e}"
    return out


def main():
    json.dump([dump(p) for p in sys.argv[1:]], sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
