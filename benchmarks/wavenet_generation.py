"""Fast WaveNet generation (Paine et al. 2016) against the naive re-run: samples per second and their ratio.

Both generate the same samples (tests/test_wavenet.py checks it); the cached version costs O(layers) per sample, the
naive one re-runs the whole stack over the receptive field (5,117 samples for the paper-like ``wavenet``).

Usage: ``python benchmarks/wavenet_generation.py [--model wavenet] [--steps 64] [--batch 1] [--threads 1]``
"""

from __future__ import annotations

import argparse
import time

import torch

import baselines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wavenet", choices=["wavenet", "wavenet_tiny"])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = baselines.create_model(args.model, num_classes=256, in_chans=256).eval()
    prime = torch.randint(0, 256, (args.batch, net.receptive_field))
    rates = {}
    for name in ("generate", "generate_naive"):
        fn = getattr(net, name)
        fn(prime, steps=2, greedy=True)  # warm-up
        t0 = time.perf_counter()
        out = fn(prime, steps=args.steps, greedy=True)
        rates[name] = args.steps * args.batch / (time.perf_counter() - t0)
        print(f"{args.model} {name:15s} {rates[name]:10.1f} samples/s (receptive field {net.receptive_field})")
        if name == "generate":
            fast = out
    assert torch.equal(fast, out), "cached and naive generation disagree"
    print(f"speed-up of the cached generation: {rates['generate'] / rates['generate_naive']:.1f}x")


if __name__ == "__main__":
    main()
