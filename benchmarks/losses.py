"""Forward + backward time of the vectorised loss core against per-pair Python loops.

    python benchmarks/losses.py                      # B = 1024, K = 2, 4, 8; small repeats
    python benchmarks/losses.py --repeats 20 --loop-repeats 3 --device cuda

Peers for the pairwise logistic (Bradley-Terry / DPO) loss, all giving the same value:
    * ``core``: ``robopref.losses.pairwise_logistic_loss`` (one broadcast [B, K, K] grid of
      pairs, a few elementwise kernels);
    * ``pair loop``: a Python loop over the K(K-1)/2 item pairs, each batched over B (how
      per-pair code is usually written: chosen/rejected tensors per pair);
    * ``scalar loop``: a Python loop over every (list, pair), scalar torch ops (the naive form);
    * ``trl-form``: for K = 2, TRL's DPO sigmoid-loss arithmetic written out (chosen/rejected
      ``-logsigmoid``; without ties, so it is timed on tie-free labels). The script reports
      whether ``import trl`` works; TRL's loss itself is a trainer method, not a function.
The other losses of the core are timed too (no loop peer). Times are the best of the repeats in ms
of one forward + backward pass; ratios are peer time / core time.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from robopref.losses import get_loss, pairwise_logistic_loss


def pair_loop(s: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-pair loop batched over lists: mean over preferred pairs pooled over the batch."""
    K = s.shape[1]
    total, count = s.new_zeros(()), s.new_zeros(())
    for i in range(K):
        for j in range(i + 1, K):
            dy = y[:, i] - y[:, j]
            valid = ((dy != 0) & m[:, i] & m[:, j]).to(s.dtype)
            d = torch.where(dy > 0, s[:, i] - s[:, j], s[:, j] - s[:, i])  # winner - loser
            total = total + (F.softplus(-d) * valid).sum()
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


def trl_form(s: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """K = 2 only: the arithmetic of TRL's ``DPOTrainer`` ``loss_type="sigmoid"``,
    ``-logsigmoid(chosen - rejected).mean()``, with the chosen item picked by the labels (the
    scores already include beta). Written out here: TRL's own ``dpo_loss`` is a method of a
    trainer instance and TRL is not a dependency of robopref."""
    chosen = (y[:, 1] > y[:, 0]).long()[:, None]  # index of the preferred item
    return -F.logsigmoid(s.gather(1, chosen) - s.gather(1, 1 - chosen)).mean()


def trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def time_fb(fn, s, y, m, repeats: int, device: torch.device) -> float:
    """Best (minimum) ms of ``fn(s, y, m).backward()`` over ``repeats`` runs after a warm-up run
    (the minimum is the estimate least disturbed by other jobs on a shared machine)."""
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
    return min(times)


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
    print(
        f"# B = {args.batch}, device = {device}, threads = {args.threads}, torch {torch.__version__},"
        f" repeats = {args.repeats} (loops {args.loop_repeats}); best-of-repeats ms of forward + backward"
    )
    print(
        f"# import trl: {'works' if trl_available() else 'fails (not installed)'}; trl-form column: see docstring"
    )
    header = (
        "| K | core bt | pair loop | ratio | scalar loop | ratio | trl-form | ratio | "
        + " | ".join(n for n in ["slic", "ipo", "listnet", "plackett_luce", "lipo_lambda"])
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
        if K == 2:
            y2 = torch.tensor([[1.0, 0.0]], device=device).expand(args.batch, 2)
            core2 = time_fb(pairwise_logistic_loss, s, y2, m, args.repeats, device)
            assert torch.allclose(trl_form(s, y2, m), pairwise_logistic_loss(s, y2, m), rtol=1e-5)
            trl = time_fb(trl_form, s, y2, m, args.repeats, device)
            row += [f"{trl:.3f}", f"{trl / core2:.1f}x"]
        else:
            row += ["-", "-"]
        for name in ["slic", "ipo", "listnet", "plackett_luce", "lipo_lambda"]:
            row.append(f"{time_fb(get_loss(name), s, y, m, args.repeats, device):.3f}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
