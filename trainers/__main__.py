"""`python -m trainers [hydra overrides]`: one fine-tuning trial from conf/config.yaml."""
import os
import sys

from trainers.settings import ConfigError


def main(argv: list[str]) -> int:
    # No hub telemetry from trl/huggingface_hub, ever; HF_HUB_OFFLINE (if set) also stops downloads.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from trainers.config import compose_config, hydra_cli, unknown_flag, version, wants_hydra_cli
    from trainers.settings import trial_settings

    if "--version" in argv:
        print(version())
        return 0
    refusal = unknown_flag(argv, "python -m trainers")
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if wants_hydra_cli(argv):
        return hydra_cli(argv, "python -m trainers")
    try:
        settings = trial_settings(compose_config(argv))
        from trainers.phases import mark

        mark("configured")
        from trainers import quiet

        quiet.install()
        from trainers.sft import run_trial

        metrics = run_trial(settings)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    task = "".join(f"; {k} {metrics[k]}" for k in ("price_mae", "price_within_20") if k in metrics)
    print(f"eval_loss {metrics['eval_loss']:.4f} after {metrics['steps']} steps{task}; adapter in {settings.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
