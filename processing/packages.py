"""Target packages: which imports make a file worth mining.

The default is BigCodeBench's library set: the 139 libraries (77 from the standard
library, 62 third-party) named in the ``libs`` field of its 1,140 tasks, as import names.
Source: github.com/bigcode-project/bigcodebench-annotation, ``hf_data/BigCodeBench.jsonl.gz``
at commit a3b89850db670d7302571142b881e4f85eef18e3 (the union of ``libs`` over all
tasks; it matches the paper's "139 libraries" and the dataset card's 77 + 62 split).

For JavaScript the default is Node's built-in modules plus the npm packages the
sandbox installs (``sandbox/javascript_packages.txt``: the list, how it was chosen
from npm's download counts, and the pinned versions live there, owned by the sandbox;
the pipeline only reads it).
"""

from __future__ import annotations

import importlib.util
import re
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


# An npm package name (optionally scoped), or a Node built-in.
NPM_NAME = re.compile(r"^(?:@[A-Za-z0-9~][A-Za-z0-9._~-]*/)?[A-Za-z0-9~][A-Za-z0-9._~-]*$")


def default_packages(language: str = "python") -> tuple[str, ...]:
    """The target packages when none are given: BigCodeBench's for Python; Node's built-in
    modules and the sandbox's npm packages for JavaScript."""
    if language == "javascript":
        from processing.languages.javascript import NODE_BUILTINS
        from sandbox.javascript import package_list

        return tuple(sorted(NODE_BUILTINS | set(package_list())))
    return BIGCODEBENCH_LIBRARIES


def parse_packages(
    packages: str | None = None, packages_file: str | None = None, language: str = "python"
) -> tuple[str, ...]:
    """Target packages from --packages (comma-separated) and/or --packages_file (one per line),
    else the language's default (``default_packages``). ValueError (one sentence) for a
    missing file or a name that is not an import name (Python) or a package name (npm)."""
    names: list[str] = []
    if packages:
        names += [p.strip() for p in packages.split(",") if p.strip()]
    if packages_file:
        path = Path(packages_file)
        if not path.is_file():
            raise ValueError(
                f"--packages_file {packages_file} does not exist; give a file with one package name per line"
            )
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line)
    if not names:
        return default_packages(language)
    if language == "python":
        bad = [n for n in names if not n.isidentifier()]
        if bad:
            raise ValueError(f"target packages must be top-level import names (like numpy, sklearn), got {bad}")
    else:
        names = [n[len("node:") :] if n.startswith("node:") else n for n in names]
        bad = [n for n in names if not NPM_NAME.match(n)]
        if bad:
            raise ValueError(f"target packages must be package names (like lodash, @scope/name, fs), got {bad}")
    return tuple(sorted(set(names)))


@cache
def importable(module: str) -> bool:
    """Whether a top-level module can be imported here (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
