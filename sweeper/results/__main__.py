"""`make report` (`python -m sweeper.results [overrides]`): the report of the study the same
overrides name, as it stands (outputs/<study>/report/, leaderboard.txt, the W&B summary run)."""
import sys


def main(argv: list[str]) -> int:
    """`make report`: the report of the study the same overrides name, as it stands."""
    from sweeper.results.report import final_report
    from sweeper.settings import sweep_settings
    from sweeper.study import load_sweep_study
    from trainers.settings import ConfigError

    try:
        s = sweep_settings(argv, check_values=False)
        study = load_sweep_study(s)  # a bad file: one line
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(final_report(study, s))
    return 0


def cli() -> None:
    """The qlora-report command of an installed package."""
    from trainers.exit import exit_now

    exit_now(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
