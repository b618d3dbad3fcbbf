"""Image generation support (issue 11): toy image sets and the metrics a user of image generators expects.

    images, labels = toy_shapes(512, size=16, seed=0)        # (N, 3, 16, 16) floats in [0, 1], 4 shape classes
    net, acc = train_classifier(images, labels)              # the small classifier the metrics read features from
    feature_fid(net, real, fake); precision_recall(net, real, fake); class_accuracy(net, fake, wanted)
    tok, report = train_vq(images)                           # rlvr.images.vq: the VQ tokenizer
    policy = image_policy(ar_model(code_tokenizer(codes=128, classes=4)), ...)  # rlvr.images.ar: codes as an LM
"""

from rlvr.images.data import SHAPE_CLASSES, digits, toy_shapes
from rlvr.images.metrics import (
    FeatureNet,
    class_accuracy,
    feature_fid,
    frechet_distance,
    manifold_precision_recall,
    precision_recall,
    save_grid,
    train_classifier,
)

__all__ = ["SHAPE_CLASSES", "FeatureNet", "class_accuracy", "digits", "feature_fid", "frechet_distance",
           "manifold_precision_recall", "precision_recall", "save_grid", "toy_shapes", "train_classifier"]
