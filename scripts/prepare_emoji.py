#!/usr/bin/env python3
"""Rebuild the shipped emoji dataset in ``data/emoji/`` from the npm package ``emoji-datasource-google@16.0.0``.

Why this exists: the benchmark and the server must run on the emoji data with no network, so the
repository ships a small prepared copy (about 6.5 MB). This script documents exactly how that copy was
made and can remake it byte for byte:

    python scripts/prepare_emoji.py                      # runs `npm pack emoji-datasource-google@16.0.0`
    python scripts/prepare_emoji.py --tarball path.tgz   # or uses a tarball you already have

What it keeps: the 1,906 base emojis (skin-tone variants live inside each entry as ``skin_variations``
and are dropped; the 5 "Component" entries are dropped), with the fields the loader needs, and the
64-px Google (Noto) PNG of each, packed uncompressed (PNG is already compressed) into one zip with fixed
timestamps so reruns give identical bytes. Licence notices: the package's MIT licence (metadata) is
copied; the images are Apache-2.0 (``LICENSE-images-Apache-2.0.txt`` is kept in the repository).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "emoji-datasource-google"
VERSION = "16.0.0"
FIELDS = ("unified", "name", "short_names", "category", "subcategory", "sort_order", "added_in", "image")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def npm_pack(workdir: Path) -> Path:
    """Fetch the package tarball with the ordinary npm client (the only network step)."""
    if shutil.which("npm") is None:
        sys.exit("npm is not installed; pass --tarball with a copy of the package tarball instead")
    out = subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=workdir, check=True,
                         capture_output=True, text=True)
    name = out.stdout.strip().splitlines()[-1]
    return workdir / name


def prepare(tarball: Path, out_dir: Path) -> dict:
    """Filter ``emoji.json``, pack the kept PNGs, copy the MIT licence; return a summary."""
    with tarfile.open(tarball, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            fh = tar.extractfile(members[name])
            assert fh is not None
            return fh.read()

        pkg = json.loads(read("package/package.json"))
        if pkg.get("version") != VERSION:
            sys.exit(f"expected {PACKAGE}@{VERSION}, the tarball holds version {pkg.get('version')}")
        entries = json.loads(read("package/emoji.json"))
        kept = sorted((e for e in entries if e["category"] != "Component"), key=lambda e: e["sort_order"])
        missing = [e["image"] for e in kept if not e.get("has_img_google") or f"package/img/google/64/{e['image']}" not in members]
        if missing:
            sys.exit(f"{len(missing)} kept emojis have no 64-px Google image, e.g. {missing[:3]}")

        out_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for e in sorted(kept, key=lambda e: e["image"]):
                info = zipfile.ZipInfo(e["image"], date_time=ZIP_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, read(f"package/img/google/64/{e['image']}"))
        zip_bytes = buf.getvalue()
        (out_dir / "images-google-64.zip").write_bytes(zip_bytes)
        (out_dir / "LICENSE-metadata-MIT.txt").write_bytes(read("package/LICENSE"))

    doc = {
        "source": {"package": f"{PACKAGE}@{VERSION}", "tarball_sha256": hashlib.sha256(tarball.read_bytes()).hexdigest(),
                   "homepage": "https://github.com/iamcal/emoji-data"},
        "licenses": {"metadata": "MIT (LICENSE-metadata-MIT.txt, Copyright (c) 2013 Cal Henderson)",
                     "images": "Apache-2.0 (LICENSE-images-Apache-2.0.txt; Google Noto Emoji images)"},
        "filter": "base emojis only: skin-tone variants and the 'Component' category dropped",
        "images": {"file": "images-google-64.zip", "size_px": 64, "sha256": hashlib.sha256(zip_bytes).hexdigest()},
        "emojis": [{k: e[k] for k in FIELDS} for e in kept],
    }
    (out_dir / "emoji.json").write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    if not (out_dir / "LICENSE-images-Apache-2.0.txt").exists():
        print("warning: add the Apache-2.0 licence text as LICENSE-images-Apache-2.0.txt", file=sys.stderr)
    return {"emojis": len(kept), "categories": len({e["category"] for e in kept}),
            "subcategories": len({e["subcategory"] for e in kept}), "zip_bytes": len(zip_bytes)}


def main() -> None:
    """Command line entry: fetch (or take) the tarball and write the prepared copy."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tarball", type=Path, help=f"an existing {PACKAGE}-{VERSION}.tgz (default: run npm pack)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "emoji")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or npm_pack(Path(tmp))
        print(json.dumps(prepare(tarball, args.out)))


if __name__ == "__main__":
    main()
