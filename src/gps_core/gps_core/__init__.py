"""The rclpy-free core every gps-ros2 package shares: tasks and their success rules, arm kinematics,
the named state/observation layout, SampleBatch and the linear-Gaussian controller type."""
