"""The budget flags of `sia run` and `sia resume` (`RunConfig.budget`, checked by nodes/budget.py):

    sia run --task lawbench --max-wall 3600 --max-tokens target=2000000 --max-tokens feedback=50000
    sia resume RUN --max-wall 7200        (a paused run goes on under the larger limit)

A flag given to `sia resume` replaces that limit in the run's config.json (and only that limit),
so the next resume keeps it."""

from __future__ import annotations

from typing import get_args

from sia.cli.common import CLIError
from sia.files import read_json, write_json_atomic

PAUSED_EXIT = 3  # `sia run`/`resume` exit status of a run a budget paused (0: it finished)


def add_budget_arguments(parser) -> None:
    from sia.config import BudgetRole

    roles = ", ".join(r for r in get_args(BudgetRole) if r != "total")
    parser.add_argument("--max-wall", type=float, metavar="SECONDS",
                        help="pause once the generations have taken this long (resume with a larger one)")
    parser.add_argument("--max-tokens", action="append", metavar="[ROLE=]N",
                        help=f"pause once ROLE ({roles}) has spent N prompt + completion tokens; a bare N counts "
                             "all roles together; repeat for several roles")
    parser.add_argument("--max-usd", type=float, metavar="USD",
                        help="pause once the roles' endpoints have cost this much, at the prices in the role config "
                             "(usd_per_1m_prompt_tokens, usd_per_1m_completion_tokens)")


def budget_flags(args) -> dict:
    """The budget fields the command line sets (only those given)."""
    from sia.config import BudgetRole

    out: dict = {}
    if args.max_wall is not None:
        out["max_wall_s"] = args.max_wall
    if args.max_usd is not None:
        out["max_usd"] = args.max_usd
    if args.max_tokens:
        tokens = {}
        for entry in args.max_tokens:
            role, _, number = entry.rpartition("=")
            role = role or "total"
            if role not in get_args(BudgetRole) or not number.strip().isdigit():
                raise CLIError(f"--max-tokens {entry}: write ROLE=N with ROLE one of "
                               f"{', '.join(get_args(BudgetRole))} (or a bare N for all roles), e.g. --max-tokens target=100000")
            tokens[role] = int(number)
        out["max_tokens"] = tokens
    return out


def with_budget(cfg, args):
    """`cfg` with the command line's budget flags applied (max_tokens entries merge per role)."""
    from sia.config import BudgetConfig, RunConfig

    flags = budget_flags(args)
    if not flags:
        return cfg
    merged = cfg.budget.model_dump()
    if "max_tokens" in flags:
        flags["max_tokens"] = {**merged["max_tokens"], **flags["max_tokens"]}
    try:
        budget = BudgetConfig.model_validate({**merged, **flags})
        return RunConfig.model_validate({**cfg.model_dump(), "budget": budget.model_dump()})
    except ValueError as exc:
        raise CLIError(f"invalid budget: {exc}") from None


def save_budget(config_path, cfg) -> None:
    """Write `cfg.budget` into an existing run's config.json, leaving the rest as it was."""
    data = read_json(config_path)
    data["budget"] = cfg.budget.model_dump(mode="json")
    write_json_atomic(config_path, data)
