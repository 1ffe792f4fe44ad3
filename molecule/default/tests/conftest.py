import os

import pytest
from netfleet_lab import REPO, Lab


@pytest.fixture(scope="session")
def lab():
    inventory = os.environ.get("NETFLEET_INVENTORY", str(REPO / "inventories" / "lab"))
    return Lab(inventory, os.environ.get("NETFLEET_LAB_PREFIX", "nf"))
