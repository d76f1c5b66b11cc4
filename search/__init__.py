"""Search jobs: which pruning policy keeps the most accuracy under a latency budget on the device.

- `search.job`: a job (TOML file and/or CLI flags), resolved into `runs/<name>/job.toml`;
- `search.store`: the Optuna storage (journal file by default, any RDB URL), one study per job and agent;
- `search.context.SearchContext`: what an agent gets (evaluator, budgets, studies, `evaluate`/`record`);
- `search.agents`: the agents by name (`REGISTRY`), imported lazily;
- `search.runner`: runs and resumes a job (`--workers` for Optuna agents);
- `search.report`, `search.export`, `search.dashboard`: best policy per budget, Pareto plot and report;
  fine-tuned ONNX export; optuna-dashboard on the job's storage.
"""
