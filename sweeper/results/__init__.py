"""What a sweep leaves behind: the text report, the report folder, the best adapter's model card,
the W&B summary run, and optuna-dashboard over the study."""
