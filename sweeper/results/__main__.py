"""`make report` (`python -m sweeper.results [overrides]`): the report of the study the same
overrides name, as it stands (outputs/<study>/report/, leaderboard.txt, the W&B summary run)."""
import sys


def main(argv: list[str]) -> int:
    """`make report`: the report of the study the same overrides name, as it stands."""
    import optuna

    from sweeper.results.report import final_report
    from sweeper.settings import sweep_settings
    from sweeper.study import build_storage, check_study_exists
    from trainers.settings import ConfigError

    try:
        s = sweep_settings(argv, check_values=False)
        check_study_exists(s)
        study = optuna.load_study(study_name=s.study_name, storage=build_storage(s))  # a bad file: one line
    except (ConfigError, KeyError) as e:
        print(f"error: {e if isinstance(e, ConfigError) else f'no study {s.study_name!r} in {s.storage_shown}'}",
              file=sys.stderr)
        return 2
    print(final_report(study, s))
    return 0


def cli() -> None:
    """The qlora-report command of an installed package."""
    from trainers.exit import exit_now

    exit_now(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
