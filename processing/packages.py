"""Target packages: which imports make a file worth mining.

The default is BigCodeBench's library set: the 139 libraries (77 from the standard
library, 62 third-party) named in the ``libs`` field of its 1,140 tasks, as import names.
Source: github.com/bigcode-project/bigcodebench-annotation, ``hf_data/BigCodeBench.jsonl.gz``
at commit a3b89850db670d7302571142b881e4f85eef18e3 (the union of ``libs`` over all
tasks; it matches the paper's "139 libraries" and the dataset card's 77 + 62 split).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

BIGCODEBENCH_LIBRARIES: tuple[str, ...] = (
    "Crypto",
    "Levenshtein",
    "PIL",
    "array",
    "ast",
    "base64",
    "binascii",
    "bisect",
    "blake3",
    "bs4",
    "calendar",
    "cgi",
    "chardet",
    "cmath",
    "codecs",
    "collections",
    "configparser",
    "cryptography",
    "csv",
    "ctypes",
    "cv2",
    "datetime",
    "dateutil",
    "decimal",
    "difflib",
    "django",
    "docx",
    "email",
    "enum",
    "errno",
    "faker",
    "flask",
    "flask_login",
    "flask_mail",
    "flask_restful",
    "flask_wtf",
    "fnmatch",
    "folium",
    "ftplib",
    "functools",
    "gensim",
    "geopandas",
    "geopy",
    "getpass",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "holidays",
    "html",
    "http",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keras",
    "librosa",
    "logging",
    "lxml",
    "math",
    "matplotlib",
    "mechanize",
    "mimetypes",
    "mpl_toolkits",
    "multiprocessing",
    "natsort",
    "nltk",
    "numpy",
    "openpyxl",
    "operator",
    "os",
    "pandas",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "prettytable",
    "psutil",
    "pyquery",
    "pytesseract",
    "python_http_client",
    "pytz",
    "queue",
    "random",
    "re",
    "regex",
    "requests",
    "rsa",
    "scipy",
    "seaborn",
    "secrets",
    "select",
    "sendgrid",
    "shapely",
    "shlex",
    "shutil",
    "signal",
    "skimage",
    "sklearn",
    "smtplib",
    "socket",
    "soundfile",
    "sqlite3",
    "ssl",
    "statistics",
    "statsmodels",
    "string",
    "struct",
    "subprocess",
    "sympy",
    "sys",
    "tarfile",
    "tensorflow",
    "textblob",
    "texttable",
    "textwrap",
    "threading",
    "time",
    "turtle",
    "types",
    "typing",
    "unicodedata",
    "urllib",
    "uuid",
    "warnings",
    "werkzeug",
    "wikipedia",
    "wordcloud",
    "wordninja",
    "wtforms",
    "xlwt",
    "xml",
    "xmltodict",
    "yaml",
    "zipfile",
    "zlib",
)


def parse_packages(packages: str | None = None, packages_file: str | None = None) -> tuple[str, ...]:
    """The target packages: ``--packages a,b`` and/or a file (one per line, ``#`` comments),
    else BigCodeBench's. ValueError (one sentence) for a missing file or a name that is
    not an import name."""
    names: list[str] = []
    if packages:
        names += [p.strip() for p in packages.split(",") if p.strip()]
    if packages_file:
        path = Path(packages_file)
        if not path.is_file():
            raise ValueError(
                f"--packages_file {packages_file} does not exist; give a file with one import name per line"
            )
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line)
    if not names:
        return BIGCODEBENCH_LIBRARIES
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise ValueError(f"target packages must be top-level import names (like numpy, sklearn), got {bad}")
    return tuple(sorted(set(names)))


@cache
def importable(module: str) -> bool:
    """Whether a top-level module can be imported here (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
