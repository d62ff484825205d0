"""The bench's networks written in PyTorch, and one PyTorch training step, for `paddle-cnn bench`.

Each network mirrors its paddle_cnn.models counterpart layer for layer (same convolutions,
padding, pooling, BatchNorm, bias settings and classifier), so images/s compare frameworks, not
architectures. BatchNorm momentum: paddle's 0.9 (weight of the old statistic) is torch's 0.1.
Only torch is imported here; paddle is not needed.
"""

from __future__ import annotations

from typing import Callable

# Registry names that have a PyTorch twin here -> the builder's keyword options.
TORCH_MODELS = {
    "lenet": {"first_padding": 2},
    "lenet5": {"first_padding": 0},
    "lenet5_scratch": {"first_padding": 0},  # same network as lenet5, paddle side uses scratch ops
    "resnet18": {"use_residual": True},
    "resnet18_plain": {"use_residual": False},
}


def torch_available() -> bool:
    """Whether PyTorch can be imported.

    Returns:
        True when `import torch` works.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _lenet(in_channels: int, num_classes: int, first_padding: int):
    """LeNet-5 as models/lenet.py: conv5-6, max-pool, conv5-16, avg-pool, conv5-120, fc84, fc."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=first_padding), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2, 2),
        nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(1),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )


def _basic_block(in_ch: int, out_ch: int, stride: int, use_residual: bool):
    """models/resnet.py's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN (+ shortcut), ReLU."""
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.use_residual = use_residual
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_ch, momentum=0.1)
            self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_ch, momentum=0.1)
            self.relu = nn.ReLU()
            self.downsample = None
            if use_residual and (stride != 1 or in_ch != out_ch):
                self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                                nn.BatchNorm2d(out_ch, momentum=0.1))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.use_residual:
                out = out + (x if self.downsample is None else self.downsample(x))
            return self.relu(out)

    return BasicBlock()


def _resnet18(in_channels: int, num_classes: int, use_residual: bool, stem: str):
    """ResNet18 as models/resnet.py: imagenet (7x7/2 conv + 3x3/2 max-pool) or cifar (3x3/1) stem."""
    from torch import nn

    if stem == "imagenet":
        layers = [nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                  nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)]
    elif stem == "cifar":
        layers = [nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    else:
        from ..models.resnet import STEMS  # the paddle model's list: the twin has the same stems

        raise ValueError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
    channels = 64
    for index, out_ch in enumerate((64, 128, 256, 512)):
        stride = 1 if index == 0 else 2
        layers += [_basic_block(channels, out_ch, stride, use_residual), _basic_block(out_ch, out_ch, 1, use_residual)]
        channels = out_ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def build_torch_model(name: str, in_channels: int, num_classes: int = 10, stem: str | None = None):
    """The PyTorch twin of a registered paddle_cnn model.

    Args:
        name: registry name; must be in TORCH_MODELS.
        in_channels: image channels.
        num_classes: classifier outputs.
        stem: ResNet stem ("imagenet" default, or "cifar"); ignored by LeNet.
    Returns:
        A torch.nn.Module. Raises KeyError for a model with no twin here.
    """
    options = TORCH_MODELS[name]
    if name.startswith("lenet"):
        return _lenet(in_channels, num_classes, **options)
    return _resnet18(in_channels, num_classes, stem=stem or "imagenet", **options)


def torch_train_step(name: str, shape: tuple[int, int, int], batch: int, threads: int,
                     stem: str | None = None, lr: float = 0.01, seed: int = 0) -> Callable[[], float]:
    """A closure running one PyTorch training step (forward, CrossEntropyLoss, backward, SGD) on a fixed batch.

    Args:
        name: registry name with a twin in TORCH_MODELS.
        shape: (C, H, W) of one image.
        batch: images per step.
        threads: torch.set_num_threads value (the bench passes paddle's OMP_NUM_THREADS).
        stem: ResNet stem.
        lr: SGD learning rate.
        seed: seed for the weights and the random batch.
    Returns:
        step() -> the batch loss as a float (reading it waits for the step, as hapi's to_numpy does).
    """
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = build_torch_model(name, shape[0], 10, stem).train()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def torch_info() -> dict:
    """PyTorch version and threading, for the bench JSON.

    Returns:
        {"version", "threads", "mkldnn"}.
    """
    import torch

    return {"version": torch.__version__, "threads": torch.get_num_threads(),
            "mkldnn": bool(torch.backends.mkldnn.is_available())}


def torch_eval_step(name: str, shape: tuple[int, int, int], batch: int, threads: int,
                    stem: str | None = None, seed: int = 0) -> Callable[[], object]:
    """A closure running one PyTorch eval-mode forward under no_grad on a fixed batch (`bench --inference`).

    Args:
        name: registry name with a twin in TORCH_MODELS. shape: (C, H, W). batch: images per call.
        threads: torch.set_num_threads value. stem: ResNet stem. seed: weights and batch.
    Returns:
        step() -> the logits as a numpy array (converting waits for the forward to finish).
    """
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = build_torch_model(name, shape[0], 10, stem).eval()
    x = torch.randn(batch, *shape)

    def step():
        with torch.no_grad():
            return net(x).numpy()

    return step
