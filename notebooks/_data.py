"""Where the notebooks find their data and put their outputs.

Data: `data_file("pandalm_testset/testset-v1.json")` is that file under $PREFDATA_SHARED_DATA
(the folder laid out like ../shared/data: CI and the tests set it). When the variable is unset,
the file is downloaded once from its public source, pinned to the commit the shared copy came
from, checked against its sha256 and kept in a cache folder ($PREFDATA_NOTEBOOK_CACHE, default
~/.cache/prefdata/notebook-data). $PREFDATA_DATA_MIRROR replaces
https://raw.githubusercontent.com (a mirror, or a local server in the tests).

Outputs: `output_dir("01-clean")` is a folder under $NOTEBOOK_OUT, or under a new temporary
folder when that is unset.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

GITHUB_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class Source:
    """One file of a public repository at a fixed commit."""

    repo: str
    commit: str
    path: str
    sha256: str
    license: str

    def url(self, base: str = GITHUB_RAW) -> str:
        return f"{base.rstrip('/')}/{self.repo}/{self.commit}/{self.path}"


_PANDALM = ("WeOpenML/PandaLM", "3871806e72b4832f815ecafd24d3503c73403f48")
_GSM8K = ("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c")

# The files the notebooks read, keyed by their place in the shared data folder (the same
# pins and checksums as ../shared/data/MANIFEST.json).
SOURCES: dict[str, Source] = {
    "pandalm_testset/testset-v1.json": Source(
        *_PANDALM,
        "data/testset-v1.json",
        "cc154f9067c7382d7ea86f8f246511a5e1ac87e1fddd845c5938d789505b07a4",
        "Apache-2.0",
    ),
    "pandalm_testset/gpt-3.5-turbo-testset-v1.json": Source(
        *_PANDALM,
        "data/gpt-3.5-turbo-testset-v1.json",
        "4c00aa7b3eeae504050a037422ba6f5b0a2ee041680f47bb77b8a4b549b128e3",
        "Apache-2.0",
    ),
    "pandalm_testset/pandalm-7b-testset-v1.json": Source(
        *_PANDALM,
        "data/pandalm-7b-testset-v1.json",
        "9a40b62a7bb2aa87ca77eb8bfcb51539b5a62f974ce91678d30e834d65ed0a7e",
        "Apache-2.0",
    ),
    "hhh_alignment/hhh_alignment_eval.json": Source(
        "prometheus-eval/prometheus-eval",
        "dcfb44272d5d0414832f5dbb8c2a05ebc2614234",
        "eval/benchmark/data/hhh_alignment_eval.json",
        "fe6655dfeec99d04d582692767c736f2385b5e067f0b894d1b73a32af7be9c9e",
        "Apache-2.0",
    ),
    "gsm8k/test.jsonl": Source(
        *_GSM8K,
        "grade_school_math/data/test.jsonl",
        "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
        "MIT",
    ),
    "gsm8k/example_model_solutions.jsonl": Source(
        *_GSM8K,
        "grade_school_math/data/example_model_solutions.jsonl",
        "4bc62db838f8418365d51c627bd66294cbdca9fb7f01519cb13f0dce8c51580b",
        "MIT",
    ),
    "hh_rlhf/harmless-base_test.jsonl.gz": Source(
        "anthropics/hh-rlhf",
        "354e5c3cb8960630860dd5774a6ac2a58313bf4d",
        "harmless-base/test.jsonl.gz",
        "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03",
        "MIT",
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where downloaded files are kept: $PREFDATA_NOTEBOOK_CACHE or the prefdata cache."""
    if os.environ.get("PREFDATA_NOTEBOOK_CACHE"):
        return Path(os.environ["PREFDATA_NOTEBOOK_CACHE"])
    from prefdata.paths import cache_root

    return cache_root() / "notebook-data"


def download(name: str, dest: Path) -> Path:
    """Fetch SOURCES[name] to `dest` (atomically), refusing a file whose sha256 differs."""
    source = SOURCES[name]
    url = source.url(os.environ.get("PREFDATA_DATA_MIRROR") or GITHUB_RAW)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while block := response.read(1 << 20):
                out.write(block)
        got = _sha256(tmp)
        if got != source.sha256:
            raise RuntimeError(
                f"{url}: sha256 {got} does not match the pinned {source.sha256}; not using it"
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def data_file(name: str) -> Path:
    """The path of a data file named as in the shared data folder (see the module doc)."""
    shared = os.environ.get("PREFDATA_SHARED_DATA")
    if shared:
        path = Path(shared) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (PREFDATA_SHARED_DATA={shared})")
        return path
    if name not in SOURCES:
        raise KeyError(f"no public source known for {name!r}; set PREFDATA_SHARED_DATA")
    path = cache_dir() / name
    if not path.is_file():
        print(f"downloading {name} from {SOURCES[name].repo} ({SOURCES[name].license})")
        download(name, path)
    return path


def output_dir(name: str) -> Path:
    """A fresh-or-reused folder for one notebook's outputs: $NOTEBOOK_OUT/<name>, or a new
    temporary folder when NOTEBOOK_OUT is unset."""
    root = os.environ.get("NOTEBOOK_OUT")
    base = Path(root) if root else Path(tempfile.mkdtemp(prefix="prefdata-notebooks-"))
    out = base / name
    out.mkdir(parents=True, exist_ok=True)
    return out
