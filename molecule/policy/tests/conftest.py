# the scenario's lab, as a fixture (imported for pytest, not used by name)
from netfleet_lab import lab  # noqa: F401  # pylint: disable=unused-import
