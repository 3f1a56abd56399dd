#!/usr/bin/env python3
"""The reference export issue 25 measures the project's own ONNX export against.

torchvision's EfficientNet (B0-B7), exported by PyTorch's own ONNX exporter: the way most people get
an EfficientNet ONNX graph. Random weights (torchvision's initialisation, evaluation mode): the speed
of a network does not depend on its values. The graph takes normalised NCHW float32 images with a
dynamic batch (input "images") and returns logits; normalisation happens outside it, as torchvision's
transforms do it.

    python3 scripts/reference-export/export.py --variant b0 --resolution 224 --out /tmp/ref-b0.onnx

Needs PyTorch and torchvision; on Debian 12: apt-get install python3-torch python3-torchvision
(PyTorch 1.13, torchvision 0.14; run with /usr/bin/python3 if another Python is first on PATH).
Exit status 3 with one line on stderr when they are missing, so callers can say so and go on.
"""
import argparse
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--variant', default='b0', choices=[f'b{i}' for i in range(8)])
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
    model = getattr(torchvision.models, f'efficientnet_{args.variant}')(weights=None).eval()
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
    print(f'{args.out}: torchvision {torchvision.__version__} efficientnet_{args.variant} at {args.resolution}, torch {torch.__version__}, opset {args.opset}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
