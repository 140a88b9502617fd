"""Small helpers for records and dates."""

import datetime
import itertools
import json


def days_between(start, end):
    """Whole days from the ISO date start to the ISO date end (negative when end is earlier)."""
    return (datetime.date.fromisoformat(end) - datetime.date.fromisoformat(start)).days


def group_by_key(records, key):
    """dict from each value of record[key] to the records having it, in input order."""
    ordered = sorted(records, key=lambda record: record[key])
    return {value: list(group) for value, group in itertools.groupby(ordered, key=lambda record: record[key])}


def compact_json(data):
    """data as JSON with sorted keys and no spaces."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def chunked(items, size):
    """items in consecutive lists of size (the last one may be shorter)."""
    iterator = iter(items)
    return [list(chunk) for chunk in iter(lambda: list(itertools.islice(iterator, size)), [])]
