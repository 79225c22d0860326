"""The search strategy: the space and its priors (space.py), the start design (start.py), the
sampler that follows it (sampler.py), and which sampler and pruner a sweep gets (strategy.py)."""
