#!/usr/bin/env python3
"""The reference export issue 25 measures the project's own ONNX export against.

torchvision's EfficientNet (B0-B7), exported by PyTorch's own ONNX exporter: the way most people get
an EfficientNet ONNX graph. Random weights (torchvision's initialisation, evaluation mode): the speed
of a network does not depend on its values. The graph takes normalised NCHW float32 images with a
dynamic batch (input "images") and returns logits; normalisation happens outside it, as torchvision's
transforms do it.

EfficientNet-Lite0-4 (--variant lite0..lite4): torchvision has none, so the same torchvision classes
are configured as Lite (the Lite builder's coefficients, stem 32 and head 1280 fixed, first and last
stages' repeats fixed) and changed as Lite changes B0: squeeze-and-excite removed, ReLU6 for SiLU.
Symmetric padding as torchvision pads (TF 'same' pads stride-2 convs at the bottom/right): the same
arithmetic. The trainable parameter count is printed (Lite0: 4,652,008, as timm's tf_efficientnet_lite0).

    python3 scripts/reference-export/export.py --variant b0 --resolution 224 --out /tmp/ref-b0.onnx

Needs PyTorch and torchvision; on Debian 12: apt-get install python3-torch python3-torchvision
(PyTorch 1.13, torchvision 0.14; run with /usr/bin/python3 if another Python is first on PATH).
Exit status 3 with one line on stderr when they are missing, so callers can say so and go on.
"""
import argparse
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--variant', default='b0', choices=[f'b{i}' for i in range(8)] + [f'lite{i}' for i in range(5)])
    p.add_argument('--resolution', type=int, default=224)
    p.add_argument('--out', required=True)
    p.add_argument('--opset', type=int, default=17)
    args = p.parse_args()
    try:
        import torch
        import torchvision
    except ImportError as e:
        print(f'reference export needs PyTorch and torchvision ({e}); on Debian: apt-get install python3-torch python3-torchvision', file=sys.stderr)
        return 3
    torch.manual_seed(0)
    if args.variant.startswith('lite'):
        model = lite(torch, torchvision, int(args.variant[4:])).eval()
    else:
        model = getattr(torchvision.models, f'efficientnet_{args.variant}')(weights=None).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, args.resolution, args.resolution)
    with torch.no_grad():
        torch.onnx.export(
            model,
            x,
            args.out,
            input_names=['images'],
            output_names=['logits'],
            dynamic_axes={'images': {0: 'N'}, 'logits': {0: 'N'}},
            opset_version=args.opset,
            do_constant_folding=True,
        )
    print(f'{args.out}: torchvision {torchvision.__version__} efficientnet_{args.variant} ({params} parameters) at {args.resolution}, torch {torch.__version__}, opset {args.opset}')
    return 0


# tensorflow/tpu efficientnet_lite_builder.py efficientnet_lite_params: (width, depth, dropout).
LITE = [(1.0, 1.0, 0.2), (1.0, 1.1, 0.2), (1.1, 1.2, 0.3), (1.2, 1.4, 0.3), (1.4, 1.8, 0.3)]


def lite(torch, torchvision, n):
    from functools import partial
    from torchvision.models import efficientnet as e
    from torchvision.ops.misc import SqueezeExcitation

    width, depth, dropout = LITE[n]
    conf = partial(e.MBConvConfig, width_mult=width, depth_mult=depth)
    rows = [
        conf(1, 3, 1, 32, 16, 1),
        conf(6, 3, 2, 16, 24, 2),
        conf(6, 5, 2, 24, 40, 2),
        conf(6, 3, 2, 40, 80, 3),
        conf(6, 5, 1, 80, 112, 3),
        conf(6, 5, 2, 112, 192, 4),
        conf(6, 3, 1, 192, 320, 1),
    ]
    # Fixed stem (32) and the first and last stages' repeats.
    rows[0].input_channels = 32
    rows[0].num_layers = 1
    rows[-1].num_layers = 1
    model = e.EfficientNet(rows, dropout, last_channel=1280)

    def swap(module):
        for name, child in module.named_children():
            if isinstance(child, SqueezeExcitation):
                setattr(module, name, torch.nn.Identity())
            elif isinstance(child, torch.nn.SiLU):
                setattr(module, name, torch.nn.ReLU6(inplace=True))
            else:
                swap(child)

    swap(model)
    return model


if __name__ == '__main__':
    sys.exit(main())
