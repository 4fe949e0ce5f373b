"""The benchmark models as PyTorch modules with random weights, and their ONNX exports at a given batch size.

    python benchmarks/torch_models.py resnet50 vit_b_16 bert_base --batch 32 --out /tmp/models

Needs torch (and torchvision, transformers for the models that use them); never downloads weights. CNNs get their
BatchNorm statistics calibrated on random images before export, so activations stay well scaled (an uncalibrated
random net vanishes or explodes) — the same recipe as ../shared/models/export_torchvision.py. The exported graph has a
fixed batch (mace specializes programs to shapes): one file per batch size, named ``NAME_bBATCH.onnx``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[], Any]  # -> torch.nn.Module returning one tensor
    inputs: Callable[[int], list[tuple[str, np.ndarray]]]  # batch -> named example inputs (numpy)
    calibrate: bool  # BatchNorm statistics from random images


def _vision(arch: str, size: int) -> ModelSpec:
    def build() -> Any:
        import torchvision

        kwargs: dict[str, Any] = {"aux_logits": False, "init_weights": True} if arch == "inception_v3" else {}
        return getattr(torchvision.models, arch)(weights=None, **kwargs)

    def inputs(batch: int) -> list[tuple[str, np.ndarray]]:
        return [("input", np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32))]

    return ModelSpec(build, inputs, calibrate=not arch.startswith("vit"))


def _vit_small(size: int, **config: int) -> ModelSpec:
    """torchvision's VisionTransformer at a small configuration: the same exported graph as ViT-B/16, a test's size."""

    def build() -> Any:
        import torchvision

        return torchvision.models.VisionTransformer(image_size=size, **config)

    def inputs(batch: int) -> list[tuple[str, np.ndarray]]:
        return [("input", np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32))]

    return ModelSpec(build, inputs, calibrate=False)


def _bert(seq: int, **config: int) -> ModelSpec:
    def build() -> Any:
        import torch
        import transformers

        class FirstOutput(torch.nn.Module):  # the last hidden state: one tensor for every peer
            def __init__(self) -> None:
                super().__init__()
                self.bert = transformers.BertModel(transformers.BertConfig(**config))

            def forward(self, input_ids: Any) -> Any:
                return self.bert(input_ids, return_dict=False)[0]

        return FirstOutput()

    def inputs(batch: int) -> list[tuple[str, np.ndarray]]:
        vocab = config.get("vocab_size", 30522)
        return [("input_ids", np.random.default_rng(0).integers(0, vocab, (batch, seq)).astype(np.int64))]

    return ModelSpec(build, inputs, calibrate=False)


MODELS = {
    "mobilenet_v2": _vision("mobilenet_v2", 224),
    "resnet50": _vision("resnet50", 224),
    "inception_v3": _vision("inception_v3", 299),
    "squeezenet1_1": _vision("squeezenet1_1", 224),
    "shufflenet_v2_x1_0": _vision("shufflenet_v2_x1_0", 224),
    "vit_b_16": _vision("vit_b_16", 224),
    "bert_base": _bert(128),
    # the same architectures at a test's size (tests/converter/data holds their exports)
    "vit_tiny": _vit_small(32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128),
    "bert_tiny": _bert(24, vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, max_position_embeddings=64),
}


def _zoo(name: str) -> ModelSpec:
    """Any other model by name, random weights: ``ARCH`` a torchvision classifier (224 x 224), ``seg/ARCH`` a
    torchvision segmentation model (its "out", 224 x 224), ``video/ARCH`` a torchvision video classifier (8 frames
    of 112 x 112), ``timm/ARCH`` a timm model at its default input size."""
    kind, _, arch = name.rpartition("/")
    shape = {"video": (3, 8, 112, 112)}.get(kind, (3, 224, 224))

    def build() -> Any:
        import torch

        if kind == "timm":
            import timm

            return timm.create_model(arch, pretrained=False)
        import torchvision

        group = {"": torchvision.models, "seg": torchvision.models.segmentation,
                 "video": torchvision.models.video}.get(kind)
        if group is None or not hasattr(group, arch):
            raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}, or torchvision's/timm's names")
        extra = {"weights_backbone": None} if kind == "seg" else {}  # (its default backbone is pretrained)
        net = getattr(group, arch)(weights=None, **extra)
        if kind == "seg":

            class Out(torch.nn.Module):  # the segmentation map alone: one tensor
                def __init__(self) -> None:
                    super().__init__()
                    self.net = net

                def forward(self, x: Any) -> Any:
                    return self.net(x)["out"]

            return Out()
        return net

    def inputs(batch: int) -> list[tuple[str, np.ndarray]]:
        size = _timm_input_size(arch) if kind == "timm" else shape
        return [("input", np.random.default_rng(0).standard_normal((batch, *size)).astype(np.float32))]

    return ModelSpec(build, inputs, calibrate=True)


@functools.lru_cache
def _timm_input_size(arch: str) -> tuple[int, ...]:
    """A timm model's default input size, [C, H, W] (from a model built once: calibration and export both ask)."""
    import timm

    return tuple(timm.create_model(arch, pretrained=False).default_cfg["input_size"])


def spec(name: str) -> ModelSpec:
    return MODELS[name] if name in MODELS else _zoo(name)


def arch_of(path_or_name: str) -> str:
    """The model name of an exported file ("resnet50_b32.onnx" -> "resnet50")."""
    stem = Path(path_or_name).stem
    head, _, tail = stem.rpartition("_b")
    return head if head and tail.isdigit() else stem


def build(name: str, seed: int = 0) -> Any:
    """The module in eval mode with random weights (seeded), BatchNorm calibrated where the spec says so."""
    import torch

    model = spec(name)
    torch.manual_seed(seed)
    net = model.build()
    if model.calibrate and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average over the calibration batches
        net.train()
        example = model.inputs(16)[0][1]
        with torch.no_grad():
            for _ in range(4):
                net(torch.randn(*example.shape))
    return net.eval()


def export(name: str, batch: int, out_dir: Path) -> Path:
    """NAME_bBATCH.onnx in ``out_dir`` (opset 17, TorchScript exporter), reused when it is already there."""
    import torch

    path = out_dir / f"{name.replace('/', '-')}_b{batch}.onnx"
    if path.exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    net = build(name)
    inputs = spec(name).inputs(batch)
    args = tuple(torch.from_numpy(a) for _, a in inputs)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, args, str(tmp), input_names=[n for n, _ in inputs], output_names=["output"],
                      opset_version=17, dynamo=False)
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help=f"{', '.join(MODELS)}, or (zoo) ARCH, seg/ARCH, video/ARCH, "
                        "timm/ARCH: torchvision's or timm's models by name")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    failed = []
    for name in args.names:
        try:
            print(export(name, args.batch, args.out), flush=True)
        except Exception as e:  # a zoo sweep goes on past a model that does not export
            failed.append(name)
            print(f"{name}: not exported: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr, flush=True)
    if failed:
        raise SystemExit(f"not exported: {', '.join(failed)}")


if __name__ == "__main__":
    main()
