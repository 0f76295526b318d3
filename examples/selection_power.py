"""How large must the selection split be for keep-best to see a given gain? A simulation.

    python examples/selection_power.py --wins 0.1265 --losses 0.0335 --sizes 72,144

keep-best compares two candidates item by item on the selection split. For 0/1 scores each
item is a win (+1: only the candidate is right), a loss (-1: only the incumbent is) or a tie.
Given the share of wins and losses expected per item (estimate them on held-out data such as
`examples/lora_dev_probe.py`'s dev slice, never on the selection split), this draws selection
splits of each size, runs keep-best's own test on them and prints the share accepted: the
test's power. With wins == losses it prints the false-acceptance rate instead (about
1 - confidence). Choose the size before a run; enlarging it after a run failed is optional
stopping.
"""

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table


from sia.config import KeepBestConfig
from sia.nodes.keep_best import keep_best


def acceptance_rate(n_items: int, wins: float, losses: float, cfg: KeepBestConfig, trials: int, seed: int = 0) -> float:
    """Share of `trials` simulated selection splits of `n_items` on which keep-best accepts."""
    if not (0 <= wins and 0 <= losses and wins + losses <= 1):
        raise ValueError(f"wins={wins} and losses={losses} must be shares of items that add up to at most 1")
    rng = np.random.default_rng(seed)
    incumbent = {str(i): 0.0 for i in range(n_items)}
    accepted = 0
    for _ in range(trials):
        outcome = rng.choice(3, size=n_items, p=[wins, losses, 1 - wins - losses])
        candidate = {str(i): {0: 1.0, 1: -1.0, 2: 0.0}[int(o)] for i, o in enumerate(outcome)}
        accepted += keep_best(candidate, incumbent, cfg).accepted
    return accepted / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wins", type=float, required=True, help="share of items only the candidate gets right")
    parser.add_argument("--losses", type=float, required=True, help="share of items only the incumbent gets right")
    parser.add_argument("--sizes", default="36,72,108,144", help="comma-separated selection sizes")
    parser.add_argument("--confidence", type=float, default=KeepBestConfig().confidence)
    parser.add_argument("--trials", type=int, default=1000)
    opts = parser.parse_args()
    cfg = KeepBestConfig(confidence=opts.confidence, resamples=2000)
    table = Table(title=f"keep-best power: wins {opts.wins:.3f}, losses {opts.losses:.3f} per item "
                        f"(gain {opts.wins - opts.losses:+.3f}), confidence {opts.confidence}")
    for column in ("selection items", "accepted"):
        table.add_column(column, justify="right")
    for size in (int(s) for s in opts.sizes.split(",")):
        table.add_row(str(size), f"{acceptance_rate(size, opts.wins, opts.losses, cfg, opts.trials):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
