"""The paper's experiments and tooling (Levine et al. 2016), apart from the library: Table I baselines
(baselines), the pose-network architecture comparison (architectures), sample efficiency against model-free
RL (sample_efficiency), policy evaluation tables (evaluation) and docs/results.md (report).

The library (dynamics, traj_opt, costs, algorithms, policy_opt) never imports this subpackage.
Each module is a CLI: ``python -m gps_trainer.paper.<module> --help``.
"""
