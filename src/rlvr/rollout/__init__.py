"""Rollout: one step's rows from the policy. `collect` (prompts -> groups of completions, through a multi-turn
environment when one is configured), `score` (reward sources -> rewards), group filters (dynamic sampling,
pass-rate bands), and the prompt stream they read from."""
