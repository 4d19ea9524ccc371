"""A run's throughput, MFU and cost (run.json ``cost``, ``normguide.pipeline.throughput``) in
words: the lines the CLI prints after a run and the dataset card's "Cost" section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def cost_lines(cost: Mapping[str, Any] | None) -> list[str]:
    """What the CLI prints (and the card lists) of a run.json ``cost`` record: one line each."""
    if not cost:
        return []

    def num(v, fmt, none="n/a"):
        return none if v is None else format(v, fmt)

    lines = [
        (f"generation: {cost['images']} image(s) in {cost['generation_seconds']:.2f} s of model time, "
         f"{num(cost.get('images_per_s_per_device'), '.3f')} images/s per device ({cost.get('device')}, {cost.get('dtype')})"),
        "FLOPs per image: " + (f"{cost['flops_per_image'] / 1e9:,.3f} GFLOP" if cost.get("flops_per_image") is not None
                               else (cost.get("flops_note") or "n/a"))
        + f"; achieved {num(cost.get('achieved_tflops'), '.4g')} TFLOP/s",
        "MFU: " + (f"{cost['mfu']:.2%} of {cost['peak_tflops']:g} TFLOP/s peak" if cost.get("mfu") is not None
                   else f"n/a ({cost.get('peak_note') or 'peak unknown'})"),
        "cost: " + (f"${cost['usd_per_1000_images']:.4f} per 1,000 images at ${cost['price_per_hour']:g}/h per device"
                    if cost.get("usd_per_1000_images") is not None
                    else "not priced (set cost.device_price_per_hour or --price-per-hour)"),
    ]
    return lines
