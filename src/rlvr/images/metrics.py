"""Metrics for generated images, from a small classifier trained on the same toy data.

1. `FeatureNet`: two 3 × 3 conv layers (16, 32 channels, ReLU, 2 × 2 max-pool each), a 64-unit feature layer and a
   linear class head. `train_classifier` trains it with Adam on 80% of the rows and returns it with its accuracy on
   the other 20% (report it beside every metric it serves: features of a weak classifier say little).
2. `frechet_distance(mu1, cov1, mu2, cov2)` = |mu1 − mu2|² + tr(cov1) + tr(cov2) − 2 tr((cov1^½ cov2 cov1^½)^½)
   (FID's formula, arXiv 1706.08500, eq. 6; computed in float64 through symmetric eigendecompositions, so no
   complex parts); `feature_fid(net, real, fake)` applies it to the 64-d features ("feature-FID": comparable between
   runs that share the classifier, not with Inception-FID numbers).
3. `manifold_precision_recall(real, fake, k)`: Kynkäänniemi et al. (arXiv 1904.06991, §3): each point's radius is
   the distance to its k-th nearest neighbour in its own set; precision = the share of fake points inside some real
   point's ball, recall = the share of real points inside some fake point's ball. k = 3 as the paper.
   `precision_recall(net, real, fake)` on the classifier's features.
4. `class_accuracy(net, images, wanted)`: the share of images the classifier assigns to the class asked for.
5. `save_grid(images, path, nrow)`: a PNG grid of (N, 3, H, W) images in [0, 1], 1 px light gutters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class FeatureNet(nn.Module):
    def __init__(self, *, size: int = 16, classes: int = 4, channels: int = 3, width: int = 64):
        super().__init__()
        if size % 4:
            raise ValueError(f"FeatureNet: image size must be a multiple of 4, got {size}")
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * (size // 4) ** 2, width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, steps: int = 300, batch_size: int = 64,
                     lr: float = 2e-3, seed: int = 0) -> tuple[FeatureNet, float]:
    """A FeatureNet trained on 80% of (images, labels); returns it (in eval mode) and its held-out accuracy."""
    if len(images) != len(labels) or len(images) < 10:
        raise ValueError(f"train_classifier: need >= 10 images with one label each, got {len(images)} images and "
                         f"{len(labels)} labels")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=g)
    cut = int(0.8 * len(images))
    train, held = order[:cut], order[cut:]
    torch.manual_seed(seed)
    net = FeatureNet(size=images.shape[-1], classes=int(labels.max()) + 1, channels=images.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = train[torch.randint(len(train), (batch_size,), generator=g)]
        loss = nn.functional.cross_entropy(net(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net, class_accuracy(net, images[held], labels[held])


@torch.no_grad()
def class_accuracy(net: FeatureNet, images: torch.Tensor, wanted: torch.Tensor) -> float:
    return float((net(images).argmax(-1) == wanted).float().mean())


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Squared Fréchet distance between N(mu1, cov1) and N(mu2, cov2) (module docstring 2)."""
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    root = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(root @ cov2 @ root).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(0), torch.cov(x.T) if len(x) > 1 else torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)


@torch.no_grad()
def feature_fid(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor) -> float:
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"feature_fid: need >= 2 images on each side, got {len(real)} real and {len(fake)} fake")
    return frechet_distance(*_stats(net.features(real)), *_stats(net.features(fake)))


def manifold_precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of feature sets (module docstring 3)."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision_recall: need more than k = {k} points on each side, got {len(real)} real and "
                         f"{len(fake)} fake")
    real, fake = real.double(), fake.double()

    def radii(x):  # distance to the k-th nearest other point (index 0 is the point itself)
        return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

    r_real, r_fake = radii(real), radii(fake)
    cross = torch.cdist(fake, real)  # (F, R)
    precision = (cross <= r_real[None, :]).any(1).double().mean()
    recall = (cross.T <= r_fake[None, :]).any(1).double().mean()
    return float(precision), float(recall)


@torch.no_grad()
def precision_recall(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> tuple[float, float]:
    return manifold_precision_recall(net.features(real), net.features(fake), k=k)


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, scale: int = 1) -> Path:
    """(N, 3, H, W) images in [0, 1] as one PNG, `nrow` per row, each pixel drawn `scale` x `scale` (nearest)."""
    from PIL import Image

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"save_grid: expected (N, 3, H, W) or (N, 1, H, W) images, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    grid = torch.full((3, rows * (h + 1) + 1, nrow * (w + 1) + 1), 0.9)
    for i, image in enumerate(images.clamp(0, 1).expand(n, 3, h, w) if c == 1 else images.clamp(0, 1)):
        r, q = divmod(i, nrow)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = image
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    pixels = (grid * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path
