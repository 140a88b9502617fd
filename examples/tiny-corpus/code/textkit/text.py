"""Small text helpers."""

import re
import string
from collections import Counter


def slugify(title):
    """Lower-case title, keep letters and digits, join the words with hyphens."""
    words = re.findall(r"[a-z0-9]+", title.lower())
    return "-".join(words)


def top_words(text, n):
    """The n most common words of text (case-insensitive), most common first, ties in order of appearance."""
    words = re.findall(r"[a-z']+", text.lower())
    return [word for word, _ in Counter(words).most_common(n)]


def strip_punctuation(text):
    """text without ASCII punctuation characters."""
    return text.translate(str.maketrans("", "", string.punctuation))


def initials(full_name):
    """Upper-case initials of the words of a name, each followed by a dot."""
    return "".join(part[0].upper() + "." for part in re.split(r"[\s-]+", full_name.strip()) if part)
