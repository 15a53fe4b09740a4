"""20 Hz torque controller node running linear-Gaussian or neural (CNN/MLP) policies; policies, observation assembly, safety, message conversion."""
