"""Embedded MuJoCo PR2-like 7-DOF arm, task scenes, gymnasium env, and a node speaking ros2_control topics."""
