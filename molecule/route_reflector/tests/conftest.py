from netfleet_lab import lab  # noqa: F401  (the scenario's lab, as a fixture)
