"""`python -m trainers [hydra overrides]`: one fine-tuning trial from conf/config.yaml."""
import os
import sys

from trainers.settings import ConfigError


def main(argv: list[str]) -> int:
    # No hub telemetry from trl/huggingface_hub, ever; HF_HUB_OFFLINE (if set) also stops downloads.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from trainers.config import answer_flags, compose_config, refuse_sweep_keys
    from trainers.offline import offline_if_hub_unreachable
    from trainers.settings import trial_settings

    answered = answer_flags(argv, "python -m trainers")
    if answered is not None:
        return answered
    settings = None
    try:
        refuse_sweep_keys(argv)
        settings = trial_settings(compose_config(argv))
        from trainers.preflight import check_not_finished

        check_not_finished(settings.output_dir, settings.resume_from_checkpoint)
        note = offline_if_hub_unreachable([settings.model.name_or_path, settings.data.name_or_path])
        if note:
            print(note, flush=True)
        from trainers.phases import mark

        mark("configured")
        from trainers import quiet

        quiet.install()
        from trainers.sft import run_trial

        metrics = run_trial(settings)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback from wherever torch was
        print(f"interrupted: {interrupted_line(settings.output_dir if settings else None)}", file=sys.stderr)
        return 130
    task = "".join(f"; {k} {metrics[k]}" for k in ("price_mae", "price_within_20") if k in metrics)
    print(f"eval_loss {metrics['eval_loss']:.4f} after {metrics['steps']} steps{task}; adapter in {settings.output_dir}")
    return 0


def interrupted_line(output_dir) -> str:
    """What a trial stopped by Ctrl-C leaves: its newest checkpoint to resume from, if it saved one."""
    from pathlib import Path

    if output_dir is None:
        return "the trial stopped before it began"
    saved = [c for c in Path(output_dir).glob("checkpoint-*") if c.name.rsplit("-", 1)[1].isdigit()
             and (c / "trainer_state.json").is_file()]
    if not saved:
        return f"the trial stopped before saving a checkpoint in {output_dir}"
    newest = max(saved, key=lambda c: int(c.name.rsplit("-", 1)[1]))
    return f"the trial stopped; resume it with the same overrides and resume_from_checkpoint={newest}"


def cli() -> None:
    """The qlora-trial command of an installed package."""
    from trainers.exit import exit_now

    exit_now(main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
