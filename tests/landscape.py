"""A study whose answer is known, shaped like the demo: the eval loss falls with the LoRA rank,
dropout adds a little; the first 3 trials complete (evals at 10, 20, 40), the rest are pruned at 10."""
import random

import optuna
from optuna.trial import TrialState


def rank_driven_study(n_trials: int, seed: int, dropout_effect: float, user_attrs: bool = False, complete: int = 3):
    rng = random.Random(seed)
    dists = {"lora_r": optuna.distributions.CategoricalDistribution([8, 16, 32]),
             "lora_dropout": optuna.distributions.FloatDistribution(0.05, 0.2)}
    study = optuna.create_study()
    for i in range(n_trials):
        r, dropout = rng.choice([8, 16, 32]), rng.uniform(0.05, 0.2)
        at_10 = 5.0 - 0.1 * r + dropout_effect * dropout
        done = i < complete
        curve = {10: at_10, 20: at_10 - 0.5, 40: at_10 - 1} if done else {10: at_10}
        attrs = {"lora_alpha": 2 * r, "steps": max(curve), "wall_s": 10.0, "train_s": 5.0, "tokens_per_s": 1000.0,
                 "peak_memory_gib": 0.7} if user_attrs else {}
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE if done else TrialState.PRUNED, value=curve[40] if done else None,
            params={"lora_r": r, "lora_dropout": dropout}, distributions=dists, intermediate_values=curve,
            user_attrs=attrs))
    return study
