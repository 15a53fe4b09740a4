"""GPS trainer node and library: dynamics, trajectory optimization, costs, algorithms, policy optimization, storage; the gps CLI."""
