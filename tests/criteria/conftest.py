import pytest
import torch
from torchvision.models import resnet18


@pytest.fixture(scope="session")
def resnet():
    """A randomly initialised resnet18 in eval mode (tests deep-copy it before changing it)."""
    torch.manual_seed(0)
    return resnet18().eval()
