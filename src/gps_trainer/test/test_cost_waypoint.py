"""EEWaypointCost: an EE-point cost active only on a window of steps (intermediate waypoint)."""

import numpy as np
import pytest

from gps_trainer.costs import EEPointCost, EEWaypointCost, cost_from_config


def test_waypoint_cost_is_the_ee_cost_inside_its_window_and_zero_outside():
    rng = np.random.default_rng(0)
    N, T, dX, dU = 2, 10, 32, 7
    X, U = rng.standard_normal((N, T, dX)), rng.standard_normal((N, T, dU))
    J = rng.standard_normal((N, T, 9, 7))
    target = np.tile([0.0, 0.0, 0.08], 3)
    kw = dict(wp=1.0, l1=0.1, l2=10.0, l_log=1.0, alpha=1e-5, target=target)
    full = EEPointCost(**kw).eval(X, U, J)
    wpt = cost_from_config({"type": "ee_waypoint", "steps": [3, -2], **kw})
    assert isinstance(wpt, EEWaypointCost)
    part = wpt.eval(X, U, J)
    inside = np.zeros(T, bool)
    inside[3:T - 2] = True
    for a, b in zip(part, full, strict=True):
        np.testing.assert_allclose(a[:, inside], b[:, inside])
        assert not np.any(a[:, ~inside])
    with pytest.raises(ValueError, match="steps"):
        EEWaypointCost(steps=[1, 2, 3])
