import pytest

from training.data import load_dataset


@pytest.fixture(scope="session")
def fashion():
    return load_dataset("fashion-mnist")
