"""export_onnx on the whole CI zoo subset: each pruned model runs in onnxruntime as in PyTorch (atol 1e-4).

``export_onnx`` itself compares onnxruntime with PyTorch at the example batch and at 3x it, so a
model that exports with different numbers or a fixed batch fails here."""
import pytest
import torch
import torchvision

import secateurs as sc
from tests.helpers import outputs
from tests.zoo.test_torchvision import CI_SUBSET

pytestmark = pytest.mark.usefixtures("one_thread")

# The smallest side each model takes; alexnet and vgg need 224 (their adaptive pooling to 6x6/7x7
# exports only when the output size divides the input's, which an ONNX pool requires).
SIDES = {"alexnet": 224, "vgg11_bn": 224, "vit_b_16": 224, "swin_t": 224, "swin_v2_t": 224, "maxvit_t": 224,
         "inception_v3": 299}


@pytest.mark.parametrize("name", CI_SUBSET)
def test_pruned_ci_zoo_model_runs_in_onnxruntime(name, tmp_path):
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(**kwargs).eval()
    side = SIDES.get(name, 64)
    x = torch.randn(1, 3, side, side)
    small = sc.prune(model, x, ratio=0.3)
    exported = sc.export_onnx(small, x, tmp_path / "m.onnx")  # verified at batch 1 and 3 inside
    x2 = torch.randn(2, 3, side, side)  # a batch size never seen at export
    torch.testing.assert_close(exported(x2), outputs(small, x2)[0], atol=1e-4, rtol=1e-4)
