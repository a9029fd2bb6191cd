"""Forward + backward time of the vectorised loss core against per-pair Python loops.

    python benchmarks/losses.py                      # B = 1024, K = 2, 4, 8; small repeats
    python benchmarks/losses.py --repeats 20 --loop-repeats 3 --device cuda

Peers for the pairwise logistic (Bradley-Terry / DPO) loss, all giving the same value:
    * ``core``: ``robopref.losses.pairwise_logistic_loss`` (one [B, K, K] kernel);
    * ``pair loop``: a Python loop over the K(K-1)/2 item pairs, each batched over B (how
      per-pair code is usually written: chosen/rejected tensors per pair);
    * ``scalar loop``: a Python loop over every (list, pair), scalar torch ops (the naive form);
    * ``trl``: TRL's DPO sigmoid loss for K = 2 when ``import trl`` works (not installed here).
The other losses of the core are timed too (no loop peer). Times are medians in milliseconds
of one forward + backward pass; ratios are peer time / core time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from robopref.losses import get_loss, pairwise_logistic_loss


def pair_loop(s: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-pair loop batched over lists: mean over preferred pairs pooled over the batch."""
    K = s.shape[1]
    total, count = s.new_zeros(()), s.new_zeros(())
    for i in range(K):
        for j in range(K):
            if i == j:
                continue
            valid = ((y[:, i] > y[:, j]) & m[:, i] & m[:, j]).to(s.dtype)
            total = total + (F.softplus(-(s[:, i] - s[:, j])) * valid).sum()
            count = count + valid.sum()
    return total / count.clamp(min=1)


def scalar_loop(s: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-(list, pair) loop with scalar torch ops."""
    B, K = s.shape
    yl, ml = y.tolist(), m.tolist()
    terms = []
    for b in range(B):
        for i in range(K):
            for j in range(K):
                if ml[b][i] and ml[b][j] and yl[b][i] > yl[b][j]:
                    terms.append(F.softplus(-(s[b, i] - s[b, j])))
    return torch.stack(terms).mean() if terms else s.sum() * 0


def trl_sigmoid_loss():
    """TRL's DPO sigmoid loss on [B, 2] scores (item 0 chosen) when TRL is importable."""
    try:
        import trl  # noqa: F401
    except ImportError:
        return None

    # TRL computes -logsigmoid(beta * logits) inside DPOTrainer.dpo_loss (not a free function
    # across versions); with scores already scaled by beta this is the same arithmetic.
    def loss(s: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        chosen = (y[:, 0] >= y[:, 1]).long()
        sw = s.gather(1, chosen[:, None]).squeeze(1)
        sl = s.gather(1, 1 - chosen[:, None]).squeeze(1)
        return -F.logsigmoid(sw - sl).mean()

    return loss


def time_fb(fn, s, y, m, repeats: int, device: torch.device) -> float:
    """Median ms of ``fn(s, y, m).backward()`` over ``repeats`` runs (one warm-up run)."""
    times = []
    for r in range(repeats + 1):
        x = s.detach().clone().requires_grad_()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x, y, m).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if r > 0:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024, help="lists per batch B")
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8], help="list sizes K")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs of the vectorised losses")
    ap.add_argument("--loop-repeats", type=int, default=2, help="timed runs of the loop peers")
    ap.add_argument("--no-scalar-loop", action="store_true", help="skip the slow scalar loop")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    trl_loss = trl_sigmoid_loss()
    print(
        f"# B = {args.batch}, device = {device}, threads = {args.threads}, torch {torch.__version__},"
        f" repeats = {args.repeats} (loops {args.loop_repeats}); median ms of forward + backward"
    )
    if trl_loss is None:
        print("# trl: not importable here (not installed), TRL column skipped")
    header = "| K | core bt | pair loop | ratio | scalar loop | ratio | trl | " + " | ".join(
        n for n in ["slic", "ipo", "listnet", "plackett_luce", "lipo_lambda"]
    )
    print(header + " |")
    print("|" + "---|" * header.count("|"))
    for K in args.ks:
        s = torch.randn(args.batch, K, generator=g).to(device)
        y = torch.randint(0, 3, (args.batch, K), generator=g).float().to(device)
        m = torch.ones(args.batch, K, dtype=torch.bool, device=device)
        ref = pairwise_logistic_loss(s, y, m)
        assert torch.allclose(pair_loop(s, y, m), ref, rtol=1e-5), "pair loop disagrees"
        core = time_fb(pairwise_logistic_loss, s, y, m, args.repeats, device)
        loop = time_fb(pair_loop, s, y, m, args.loop_repeats, device)
        row = [f"{K}", f"{core:.3f}", f"{loop:.3f}", f"{loop / core:.1f}x"]
        if args.no_scalar_loop:
            row += ["-", "-"]
        else:
            assert torch.allclose(scalar_loop(s, y, m), ref, rtol=1e-5), "scalar loop disagrees"
            scal = time_fb(scalar_loop, s, y, m, args.loop_repeats, device)
            row += [f"{scal:.1f}", f"{scal / core:.0f}x"]
        if trl_loss is not None and K == 2:
            row.append(f"{time_fb(trl_loss, s, y, m, args.repeats, device):.3f}")
        else:
            row.append("-")
        for name in ["slic", "ipo", "listnet", "plackett_luce", "lipo_lambda"]:
            row.append(f"{time_fb(get_loss(name), s, y, m, args.repeats, device):.3f}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
