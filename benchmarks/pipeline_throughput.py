"""Benchmark: normguide generation and inversion against bare diffusers, side by side, one process.

    .venv/bin/python benchmarks/pipeline_throughput.py [--model demo] [--device cpu] [--dtype float32]
        [--batch-size 8] [--steps 20] [--guidance 7.5] [--repeats 5] [--threads 1] [--compile]

One model (default: the shipped trained demo), one prompt, the same steps, guidance and batch for
every row; each repeat runs every row once, in turn, so that all rows see the same machine load;
the table gives the median over repeats. Rows:

- generation, normguide: ``generate_images`` (DDIM, CFG in one UNet pass, per-sample precision
  checks, PIL images out), batched (the default on every device since issue 23: bare diffusers'
  bytes at the same batch size) and batch-invariant (``batch_invariant=True``, an option: one
  sample at a time through the models, bytes independent of the batch);
- generation, bare diffusers: ``StableDiffusionPipeline.__call__`` on the same pipeline object with
  the same seeds as ``latents``, ``output_type="pil"``;
- inversion, normguide: ``invert_images`` (reconstruction off), both modes;
- inversion, bare diffusers: VAE encode + ``DDIMInverseScheduler`` loop with CFG, written as the
  diffusers docs do it.

Columns: images/s, the ratio to the bare diffusers row of the same stage, and peak memory during
the row (CUDA: ``max_memory_allocated``; CPU: peak RSS of the process, reset before each row through
``/proc/self/clear_refs``, so it includes the interpreter, torch and the model).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

PROMPT = "a handwritten digit seven"


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def bare_generate(pipe, seeds, steps, guidance):
    return pipe(prompt=[PROMPT] * seeds.shape[0], latents=seeds.to(pipe.device, pipe.unet.dtype),
                num_inference_steps=steps, guidance_scale=guidance, output_type="pil").images


def bare_invert(pipe, images, steps, guidance, resolution):
    """The diffusers recipe: encode, then DDIMInverseScheduler over the same grid, CFG in one pass."""
    from diffusers import DDIMInverseScheduler

    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(steps)
    device, dtype = pipe.device, pipe.unet.dtype
    with torch.no_grad():
        x = pipe.image_processor.preprocess(images, height=resolution, width=resolution).to(device, pipe.vae.dtype)
        z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        cond, uncond = pipe.encode_prompt([PROMPT] * len(images), device, 1, True)
        embeds = torch.cat([uncond, cond])
        for t in inverse.timesteps:
            out = pipe.unet(torch.cat([z, z]).to(dtype), t, encoder_hidden_states=embeds).sample
            u, c = out.chunk(2)
            z = inverse.step(u + guidance * (c - u), t, z).prev_sample
    return z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    ap.add_argument("--compile", action="store_true", help="torch.compile normguide's UNet (GPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from normguide.diffusion import generate_images, invert_images, load_pipeline, warm_up

    m = load_pipeline(args.model, device=args.device, dtype=args.dtype, compile=args.compile)
    # the bare pipeline: the same components, uncompiled, and its own scheduler object
    bare = load_pipeline(args.model, device=args.device, dtype=args.dtype).pipe if args.compile else m.pipe
    b, s, g = args.batch_size, args.steps, args.guidance
    seeds = torch.randn(b, *m.seed_shape, generator=torch.Generator().manual_seed(0))
    # reference images: the model's own generations (digits for the demo), as PIL
    with torch.inference_mode():
        refs = list(next(generate_images(m, seeds, PROMPT, num_inference_steps=s, batch_size=b, batch_invariant=False)))
    warm_up(m, batch_size=b, guidance_scale=g)

    rows = {
        ("generation", "normguide, batch-invariant (option)"): lambda: [
            im for batch in generate_images(m, seeds, PROMPT, num_inference_steps=s, guidance_scale=g, batch_size=b,
                                            batch_invariant=True) for im in batch],
        ("generation", "normguide, batched (default)"): lambda: [
            im for batch in generate_images(m, seeds, PROMPT, num_inference_steps=s, guidance_scale=g, batch_size=b,
                                            batch_invariant=False) for im in batch],
        ("generation", "bare diffusers StableDiffusionPipeline"): lambda: bare_generate(bare, seeds, s, g),
        ("inversion", "normguide, batch-invariant (option)"): lambda: invert_images(
            m, refs, PROMPT, num_inference_steps=s, guidance_scale=g, batch_size=b, reconstruction=False,
            batch_invariant=True),
        ("inversion", "normguide, batched (default)"): lambda: invert_images(
            m, refs, PROMPT, num_inference_steps=s, guidance_scale=g, batch_size=b, reconstruction=False,
            batch_invariant=False),
        ("inversion", "bare diffusers DDIMInverseScheduler loop"): lambda: bare_invert(bare, refs, s, g, m.resolution),
    }
    for fn in rows.values():  # one untimed warm-up run each
        fn()
    seconds: dict = {k: [] for k in rows}
    peaks: dict = {k: [] for k in rows}
    for _ in range(args.repeats):
        for key, fn in rows.items():
            _reset_peak(m.device)
            t0 = time.perf_counter()
            fn()
            if m.device.type == "cuda":
                torch.cuda.synchronize(m.device)
            seconds[key].append(time.perf_counter() - t0)
            peaks[key].append(_peak_mib(m.device))

    print(f"model {m.model_id} ({m.resolution}px, seeds {m.seed_shape}), {m.device} {args.dtype}"
          f"{', compiled' if args.compile else ''}, torch threads {torch.get_num_threads()}, batch {b}, {s} steps, "
          f"guidance {g}, median of {args.repeats} interleaved runs")
    print(f"{'stage':<11} {'implementation':<44} {'images/s':>9} {'vs bare':>8} {'peak MiB':>9}")
    for stage in ("generation", "inversion"):
        keys = [k for k in rows if k[0] == stage]
        base = b / statistics.median(seconds[keys[-1]])
        for key in keys:
            ips = b / statistics.median(seconds[key])
            print(f"{stage:<11} {key[1]:<44} {ips:>9.2f} {ips / base:>7.2f}x {statistics.median(peaks[key]):>9.0f}")


if __name__ == "__main__":
    main()
