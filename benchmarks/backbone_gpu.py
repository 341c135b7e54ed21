"""GPU throughput of a ViT-B/14-sized `hf:` backbone in bf16 against the GPU's FLOP bound.

Needs a CUDA GPU (exits with a message otherwise). Random weights are fine for speed: the model is
a ``Dinov2Model`` of ViT-B/14 size (768 wide, 12 layers, 12 heads, 224 px crop -> 257 tokens)
saved to a temp folder with a DINOv2-style ``preprocessor_config.json`` and loaded through sbe's
real path (``load_backbone("hf:<folder>", device="cuda")``: bf16 weights, autocast, pinned
non-blocking copies, normalisation on the GPU).

Rows:
  model     ``Backbone.embed`` on pre-decoded uint8 batches (host -> GPU copy included).
  bound     FLOPs per image (``torch.utils.flop_counter`` on one image) / the GPU's bf16 rate:
            both the datasheet's dense peak (``--peak-tflops``) and a measured 8192^3 bf16
            matmul in the same run. The ratio to the latter is the model's MFU.
  stage     ``sbe backbone`` end to end on generated 640x640 JPEGs (tar reads, draft-mode
            decode in ``--decode-workers`` processes, parts written): what the CPU side feeds.

Usage:
    python benchmarks/backbone_gpu.py [--batch 256] [--iters 40] [--images 4096]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
PROCESSOR = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    **IMAGENET,
}


def build_vitb14(folder: Path) -> int:
    """Save a random ViT-B/14 DINOv2; return its FLOPs per 224 px image (forward)."""
    import transformers as tf
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    cfg = tf.Dinov2Config(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=14,
        image_size=518,
    )
    model = tf.Dinov2Model(cfg).eval()
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(pixel_values=torch.zeros(1, 3, 224, 224))
    return int(fc.get_total_flops())


def matmul_tflops(device: str, n: int = 8192, reps: int = 10) -> float:
    if device == "cpu":  # the CPU check run: a small product stands in
        n, reps = 512, 2
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def model_rate(backbone, batch: int, iters: int) -> float:
    x = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    for _ in range(3):
        backbone.embed(x)
    t = time.perf_counter()
    for _ in range(iters):
        backbone.embed(x)  # returns numpy: every call ends synchronised
    return batch * iters / (time.perf_counter() - t)


def _jpeg(i: int) -> bytes:
    from backbone_throughput import photo_like_jpeg

    return photo_like_jpeg(i)


def stage_rate(
    model_dir: Path, work: Path, images: int, batch: int, workers: int, device: str
) -> dict:
    from backbone_throughput import d_line

    from sbe.config import BackboneConfig, IngestConfig
    from sbe.data.streetview import format_metadata
    from sbe.stages import backbone as backbone_stage
    from sbe.stages import ingest as ingest_stage

    tar = work / "raw" / "0088.tar"
    tar.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        jpegs = pool.map(_jpeg, range(images), chunksize=64)
    with tarfile.open(tar, "w") as tf:
        for i, data in enumerate(jpegs):
            stem = f"0088/0088_{i:06d}_0_{i // 4:06d}"
            for suffix, payload in (
                (".jpg", data),
                (".txt", format_metadata(d_line(i, 88)).encode()),
            ):
                info = tarfile.TarInfo(stem + suffix)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    ingest_stage.run(IngestConfig(inputs=[tar], output=work / "images"), show_progress=False)
    print(
        f"stage data: {images} JPEGs of 640 px generated + ingested in {time.perf_counter() - t0:.1f} s"
    )
    out = {}
    # cold: the decoder pool starts inside the run; warm: a second run in the same process
    for label in ("stage_cold", "stage_warm"):
        m = backbone_stage.run(
            BackboneConfig(
                input=work / "images",
                output=work / f"emb-{label}",
                model=f"hf:{model_dir}",
                device=device,
                batch_size=batch,
                decode_workers=workers,
            ),
            show_progress=False,
        )
        out[label] = {
            "images_per_second": m.extra["images_per_second"],
            "decode_workers": m.extra["decode_workers"],
            "decode_processes": m.extra.get("decode_processes"),
            "load_seconds": m.extra["load_seconds"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--images", type=int, default=4096, help="JPEGs for the stage row; 0 skips it")
    ap.add_argument("--decode-workers", type=int, default=0, help="0 = the stage's automatic")
    ap.add_argument("--peak-tflops", type=float, default=989.4, help="datasheet dense bf16 peak")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--cpu-check", action="store_true", help="run every row on the CPU, to test the script"
    )
    args = ap.parse_args()
    device = "cpu" if args.cpu_check else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible: this benchmark measures GPU throughput only")
        return

    from sbe.models.backbones import load_backbone

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (script check only)"
    print(f"GPU: {name}; torch {torch.__version__}; {os.cpu_count()} CPU cores")
    res: dict = {"gpu": name, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="sbe-gpu-bench-") as d:
        work = Path(d)
        flops = build_vitb14(work / "vitb14")
        res["gflops_per_image"] = flops / 1e9
        res["matmul_tflops"] = matmul_tflops(device)
        bb = load_backbone(f"hf:{work / 'vitb14'}", device=device, runtime="torch")
        res["dtype"] = str(getattr(bb, "amp_dtype", None))
        rate = model_rate(bb, args.batch, args.iters)
        res["model_images_per_second"] = rate
        bound_datasheet = args.peak_tflops * 1e12 / flops
        bound_tflops = res["matmul_tflops"]
        bound_measured = bound_tflops * 1e12 / flops
        res["bound_datasheet"] = bound_datasheet
        res["bound_measured_matmul"] = bound_measured
        print(
            f"ViT-B/14 (random DINOv2), 224 px, {flops / 1e9:.1f} GFLOPs per image, {res['dtype']}"
        )
        print(f"{'row':<58}{'images/s':>12}")
        print(
            f"{'model: Backbone.embed, batch ' + str(args.batch) + ' (copy included)':<58}{rate:>12,.0f}"
        )
        print(
            f"{f'bound at the measured bf16 matmul rate ({bound_tflops:.0f} TFLOP/s)':<58}"
            f"{bound_measured:>12,.0f}"
        )
        print(
            f"{f'bound at the datasheet peak ({args.peak_tflops:.0f} TFLOP/s)':<58}"
            f"{bound_datasheet:>12,.0f}"
        )
        print(
            f"model / measured bound = {rate / bound_measured:.2f} (MFU {rate * flops / 1e12:.0f} "
            f"TFLOP/s); model / datasheet bound = {rate / bound_datasheet:.2f}"
        )
        del bb
        torch.cuda.empty_cache()
        if args.images:
            try:
                res["stage"] = stage_rate(
                    work / "vitb14",
                    work / "stage",
                    args.images,
                    args.batch,
                    args.decode_workers,
                    device,
                )
                for label, r in res["stage"].items():
                    print(
                        f"{label}: {r['images_per_second']:,.0f} images/s "
                        f"({r['images_per_second'] / rate:.2f} of the model row); "
                        + ", ".join(f"{k} {v}" for k, v in r.items() if k != "images_per_second")
                    )
            except Exception as e:  # the model rows above stand on their own
                print(f"stage row failed: {type(e).__name__}: {e}")
                res["stage_error"] = f"{type(e).__name__}: {e}"
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
