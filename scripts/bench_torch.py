"""PyTorch side of scripts/bench.sh (run by hand or by that script; never by the tests).

  bench_torch.py gen MODEL OUT.pth            timm MODEL, random weights (seed 0), torch.save(state_dict)
                                               (DINOv2 at 224 px; CLIP's projection bias zero)
  bench_torch.py input OUT.npy [BATCH]         a [BATCH, 3, 224, 224] float32 input (seed 0; BATCH 1)
  bench_torch.py flops MODEL BATCH             the floating-point operations of one forward pass of
                                               BATCH images, in GFLOP (torch's FlopCounterMode: every
                                               matrix product and convolution, 2 per multiply-add;
                                               the element-wise ops are not counted)
  bench_torch.py photos OUTDIR N                N 640×480 PNG photo-like images (seed 0: smooth colour
                                               fields with noise; PNG, which vit-convert decodes bit for bit as PIL does), OUTDIR/img{k}.png
  bench_torch.py images HFDIR THREADS RUNS OUT.npy IMG...
      transformers' image processor and model from HFDIR (the converted folder) in one process:
      one warm-up, then RUNS timed calls of decode (PIL) + processor + forward on every IMG at
      once; prints the median seconds; saves the logits.
  bench_torch.py forward MODEL CKPT IN.npy OUT.npy THREADS RUNS
      loads CKPT into timm MODEL, eval, no_grad, torch.set_num_threads(THREADS), one warm-up,
      then RUNS timed forward calls (the call only); prints the median seconds; saves the logits.
"""
import sys
import time

import numpy as np
import torch


def kwargs(name: str) -> dict:
    """DINOv2 is built at 224 px (its 518 px default would not take the shared 224 input); SigLIP
    with the tanh GELU its weights were trained with (timm's default is the exact one)."""
    if "dinov2" in name:
        return {"img_size": 224}
    if "siglip" in name:
        return {"act_layer": "gelu_tanh"}
    return {}


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "input":
        rng = np.random.default_rng(0)
        batch = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        np.save(sys.argv[2], rng.standard_normal((batch, 3, 224, 224)).astype(np.float32))
        return
    if cmd == "photos":
        from PIL import Image

        out, count = sys.argv[2], int(sys.argv[3])
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
        for k in range(count):
            a, b, c = rng.uniform(0.005, 0.03, 3)
            field = np.stack([np.sin(xx * a + k), np.cos(yy * b), np.sin((xx + yy) * c)], -1)
            img = 127.5 * (1 + field) + rng.normal(0, 12, field.shape)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(f"{out}/img{k}.png")
        return
    if cmd == "images":
        import json

        import transformers
        from PIL import Image

        hf, threads, runs, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        paths = sys.argv[6:]
        torch.set_num_threads(threads)
        arch = json.load(open(f"{hf}/config.json"))["architectures"][0]
        model = getattr(transformers, arch).from_pretrained(hf).eval()
        # The PIL processor, which `--image` reproduces (PNG); the torchvision one transformers
        # picks by default when torchvision is installed resizes slightly differently.
        processor = transformers.AutoImageProcessor.from_pretrained(hf, use_fast=False)

        def call():
            images = [Image.open(p).convert("RGB") for p in paths]
            with torch.no_grad():
                return model(**processor(images=images, return_tensors="pt")).logits

        y = call()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            y = call()
            times.append(time.perf_counter() - t)
        np.save(out, y.numpy())
        times.sort()
        print(f"{times[len(times) // 2]:.4f}")
        return
    import timm

    if cmd == "flops":
        from torch.utils.flop_counter import FlopCounterMode

        name, batch = sys.argv[2], int(sys.argv[3])
        model = timm.create_model(name, pretrained=False, **kwargs(name)).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch, 3, 224, 224))
        print(f"{counter.get_total_flops() / 1e9:.3f}")
        return

    if cmd == "gen":
        torch.manual_seed(0)
        model = timm.create_model(sys.argv[2], pretrained=False, **kwargs(sys.argv[2]))
        sd = model.state_dict()
        if "head.bias" in sd and "clip" in sys.argv[2]:
            # timm's CLIP projection bias is zero in every OpenAI/LAION port (HF has none).
            sd["head.bias"].zero_()
        torch.save(sd, sys.argv[3])
        return
    if cmd == "forward":
        name, ckpt, inp, out, threads, runs = sys.argv[2:8]
        torch.set_num_threads(int(threads))
        model = timm.create_model(name, pretrained=False, **kwargs(name))
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        model.eval()
        x = torch.from_numpy(np.load(inp))
        times = []
        with torch.no_grad():
            y = model(x)
            for _ in range(int(runs)):
                t = time.perf_counter()
                y = model(x)
                times.append(time.perf_counter() - t)
        np.save(out, y.numpy())
        times.sort()
        print(f"{times[len(times) // 2]:.4f}")
        return
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
