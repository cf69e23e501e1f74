"""Input-pipeline throughput: images/s one DataLoader worker (one CPU thread) turns into training
tensors at 224 with the paper's augmentation (Table 11: RandomResizedCrop, flip, RandAugment 2
layers magnitude 10), and the CPU cores an 8-GPU Table 11 run needs to keep up.

Variants: the image source (an ImageFolder of JPEG files, or the same images as tar shards read
through wids) x the decoder (PIL, as ``botnet train`` does, or ``torchvision.io.decode_jpeg`` on the
CPU); with a GPU, also nvjpeg (``decode_jpeg(..., device="cuda")`` on a batch of 64) for the decode.
The images are synthetic photographs-to-be: smooth random colour fields with noise, 500 x 375
JPEGs at quality 90 (ImageNet's median size), so that decoding costs what an ImageNet JPEG costs.

    python benchmarks/input_pipeline.py                        # writes its table into docs/benchmarks.md
    python benchmarks/input_pipeline.py --images 64 --no-doc   # a quick look
    python benchmarks/input_pipeline.py --gpu-images-per-s 1100   # cores for 8 GPUs at that rate each
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite package beside this script
from suite.report import machine_info, measured_on, write_doc  # noqa: E402
from suite.timing import interleaved, summarize  # noqa: E402

BASELINE = ("ImageFolder", "PIL")  # what `botnet train` does on an ImageFolder; the ratios are to this row
BLOCK = "input-pipeline:cuda" if torch.cuda.is_available() else "input-pipeline:cpu"


def make_images(root: Path, n: int, size=(500, 375), seed: int = 0) -> Path:
    """``root/train/c{k}/img{i}.jpg``: n synthetic JPEGs in 10 classes (and a small val split)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", 10)):
        for i in range(count):
            low = rng.random((size[1] // 25, size[0] // 25, 3))
            img = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize(size, Image.BICUBIC), np.float32)
            img += rng.normal(0, 12, img.shape)
            folder = root / split / f"c{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i:05d}.jpg", quality=90)
    return root


def _pipelines(img_size: int):
    from torchvision.io import ImageReadMode, decode_jpeg

    from botnet.data import build_transforms, load_rgb

    tf = build_transforms(True, img_size, randaug_magnitude=10, randaug_layers=2)
    pil = lambda data: tf(load_rgb(io.BytesIO(data)))
    tv = lambda data: tf(decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB))
    return {"PIL": pil, "decode_jpeg (CPU)": tv}


def _sources(root: Path, shards: Path):
    from botnet.data import ShardImageDataset
    from botnet.data.folder import ImageFolderSafe
    from botnet.data.shards import index_path

    folder = ImageFolderSafe(root / "train")
    sharded = ShardImageDataset(index_path(shards, "train"))
    return {"ImageFolder": lambda i: Path(folder.samples[i][0]).read_bytes(),
            "shards (wids)": lambda i: sharded.raw(i)["jpg"]}, len(folder)


def measure(root: Path, shards: Path, img_size: int = 224, seed: int = 0, repeats: int = 5) -> list[dict]:
    """images/s of every (source, decoder) pair on one thread: ``repeats`` passes over all images each,
    the pairs interleaved pass by pass (suite.timing.interleaved) so a change of machine load hits
    them alike; each row has the median, the slowest and fastest pass, and its ratio to the
    ImageFolder + PIL row (what `botnet train` does on an ImageFolder)."""
    torch.set_num_threads(1)
    sources, n = _sources(root, shards)
    passes = {}
    for sname, read in sources.items():
        for dname, run in _pipelines(img_size).items():
            def one_pass(read=read, run=run):
                torch.manual_seed(seed)
                for i in range(n):
                    out = run(read(i))
                assert out.shape == (3, img_size, img_size)
            passes[(sname, dname)] = one_pass
    samples = interleaved(passes, repeats=repeats, warmup=1, device=torch.device("cpu"), max_repeats=repeats)
    rows = []
    for (sname, dname), secs in samples.items():
        st = summarize(secs)
        rows.append({"source": sname, "decoder": dname, "images": n, "passes": st.runs,
                     "images_per_s": 1e3 * n / st.median_ms, "slowest": 1e3 * n / st.max_ms,
                     "fastest": 1e3 * n / st.min_ms})
    base = next(r["images_per_s"] for r in rows if (r["source"], r["decoder"]) == BASELINE)
    for r in rows:
        r["ratio"] = r["images_per_s"] / base
    return rows


def measure_nvjpeg(root: Path, batch: int = 64) -> dict | None:
    """Batched nvjpeg decode on the GPU (decode only), images/s; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    from torchvision.io import decode_jpeg

    files = sorted((root / "train").rglob("*.jpg"))[:batch]
    data = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    decode_jpeg(data, device="cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        decode_jpeg(data, device="cuda")
    torch.cuda.synchronize()
    return {"images_per_s": 10 * len(data) / (time.perf_counter() - t0), "batch": len(data)}


def render(rows: list[dict], nv: dict | None, gpu_rate: float | None, command: str, machine: dict) -> str:
    """The table; ``machine`` is suite.report.machine_info's dict."""
    best = max(rows, key=lambda r: r["images_per_s"])
    lines = [measured_on(machine, f"one thread per pipeline, 1-min load average {machine['load1']:.2f} at the end")
             + ". Synthetic 500×375 JPEGs (q 90); RandomResizedCrop 224 + flip + RandAugment(2, 10) + normalize, as `botnet train` for "
             f"Table 11. {rows[0]['passes']} passes over the {rows[0]['images']} images per row, the rows "
             "interleaved pass by pass; images/s is the median pass, the range the slowest and fastest.", "",
             f"Command: `{command}`", "",
             "| source | decoder | images/s per worker (median) | range | vs ImageFolder + PIL |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['decoder']} | {r['images_per_s']:.0f} | {r['slowest']:.0f}-{r['fastest']:.0f} "
              f"| {r['ratio']:.2f} |" for r in rows]
    lines.append("")
    if nv:
        lines.append(f"nvjpeg batched decode on the GPU (decode only, batch {nv['batch']}): {nv['images_per_s']:.0f} images/s.")
    else:
        lines.append("nvjpeg (GPU batched decode): not measured, no GPU here; run this script on a GPU machine.")
    rate = best["images_per_s"]
    lines.append(f"CPU cores per 1000 training images/s: **{1000 / rate:.1f}** at the best row ({best['source']}, "
                 f"{best['decoder']}, {rate:.0f} images/s per core).")
    if gpu_rate:
        lines.append(f"An 8-GPU Table 11 run at {gpu_rate:.0f} images/s per GPU needs 8 × {gpu_rate:.0f} / {rate:.0f} = "
                     f"**{8 * gpu_rate / rate:.0f} cores** for the input pipeline alone.")
    else:
        lines.append("For an 8-GPU Table 11 run: cores = 8 × (training images/s per GPU) / (images/s per core); the "
                     "per-GPU rate is not measured here (no GPU), pass it with --gpu-images-per-s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200, help="training images to generate and time (default 200)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the images per row (default 5)")
    p.add_argument("--gpu-images-per-s", type=float, default=None, help="measured training images/s of one GPU")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args(argv)
    if args.images < 10 or args.repeats < 1:
        print("input_pipeline: --images must be >= 10 and --repeats >= 1", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    from botnet.cli import main as botnet

    with tempfile.TemporaryDirectory(prefix="input_pipeline_") as tmp:
        root = make_images(Path(tmp) / "folder", args.images)
        if botnet(["shards", str(root), "--output", str(Path(tmp) / "shards"), "--no-decode"]) != 0:
            return 1
        rows = measure(root, Path(tmp) / "shards", repeats=args.repeats)
        nv = measure_nvjpeg(root)
    cmd = "python benchmarks/input_pipeline.py" + (f" --images {args.images}" if args.images != 200 else "") + (
        f" --repeats {args.repeats}" if args.repeats != 5 else "") + (
        f" --gpu-images-per-s {args.gpu_images_per_s:g}" if args.gpu_images_per_s else "")
    body = render(rows, nv, args.gpu_images_per_s, cmd, machine_info())
    print(body)
    if not args.no_doc:
        write_doc(DOC, {BLOCK: body})
    return 0


if __name__ == "__main__":
    sys.exit(main())
