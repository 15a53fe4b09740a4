"""GPS algorithms: trajectory optimization only (and, from other issues, MDGPS and BADMM)."""
