#!/usr/bin/env python3
"""EfficientNet-Lite0 computed by PyTorch, written in timm's tf_efficientnet_lite0 safetensors layout.

For test/efficientnet-lite-torch.test.ts: an implementation independent of EffiTag's (torchvision's
classes, configured as Lite by scripts/reference-export/export.py) computes logits for fixed inputs,
and its weights are written under timm's names, so EffiTag's importer and ONNX export can be checked
against PyTorch's own arithmetic. Made TF-compatible first, as timm's tf_ ports are: BatchNorm eps 1e-3,
and 'same' padding on the stride-2 convolutions (the extra pixel at the bottom/right).

    python3 test/support/torch-lite.py OUT_DIR      writes model.safetensors, input.bin, logits.bin

Random weights (seeded), BatchNorm statistics measured on the inputs, a sharpened classifier. Exit 3 without PyTorch.
"""
import json
import struct
import sys
from pathlib import Path


def main() -> int:
    try:
        import numpy as np
        import torch
        import torchvision  # noqa: F401
    except ImportError as e:
        print(f'needs PyTorch, torchvision and numpy ({e})', file=sys.stderr)
        return 3
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'scripts' / 'reference-export'))
    from export import lite

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(5)
    model = lite(torch, torchvision, 0)
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    # Plain random weights make a network whose output forgets its input. So each BatchNorm's
    # statistics are those of its actual input (one training-mode pass, cumulative averages), as
    # data-dependent initialisation does; gamma and beta random around identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-3
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
                m.reset_running_stats()
                m.momentum = None
        model.train()
        model(x)
        model.eval()
        model.classifier[1].weight.mul_(20)

    # torchvision names → timm's (tf_efficientnet_lite0), taken before the padding patch below.
    state = {}

    def put(prefix, conv_bn, conv_name, bn_name):
        conv, bn = conv_bn[0], conv_bn[1]
        state[f'{prefix}{conv_name}.weight'] = conv.weight
        for ours, theirs in (('weight', 'weight'), ('bias', 'bias'), ('running_mean', 'running_mean'), ('running_var', 'running_var')):
            state[f'{prefix}{bn_name}.{theirs}'] = getattr(bn, ours)
        state[f'{prefix}{bn_name}.num_batches_tracked'] = bn.num_batches_tracked

    put('', model.features[0], 'conv_stem', 'bn1')
    for s in range(1, 8):
        for j, block in enumerate(model.features[s]):
            layers = block.block
            p = f'blocks.{s - 1}.{j}.'
            if len(layers) == 3:  # depthwise, (SE removed), project
                put(p, layers[0], 'conv_dw', 'bn1')
                put(p, layers[2], 'conv_pw', 'bn2')
            else:  # expand, depthwise, (SE removed), project
                put(p, layers[0], 'conv_pw', 'bn1')
                put(p, layers[1], 'conv_dw', 'bn2')
                put(p, layers[3], 'conv_pwl', 'bn3')
    put('', model.features[8], 'conv_head', 'bn2')
    state['classifier.weight'] = model.classifier[1].weight
    state['classifier.bias'] = model.classifier[1].bias

    # TF 'same' on the stride-2 convolutions (every stride-2 input is even at 224: k−2 pixels, the extra one last).
    def patch(module):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.Conv2d) and child.stride == (2, 2):
                k = child.kernel_size[0]
                child.padding = (0, 0)
                lo = (k - 2) // 2
                setattr(module, name, torch.nn.Sequential(torch.nn.ZeroPad2d((lo, k - 2 - lo, lo, k - 2 - lo)), child))
            else:
                patch(child)

    patch(model)
    with torch.no_grad():
        logits = model(x)

    header, blobs, offset = {'__metadata__': {'format': 'pt'}}, [], 0
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        arr = t.numpy().astype('<i8' if t.dtype == torch.int64 else '<f4')
        data = arr.tobytes()
        header[name] = {'dtype': 'I64' if t.dtype == torch.int64 else 'F32', 'shape': list(arr.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b' ' * ((8 - len(head) % 8) % 8)
    with open(out / 'model.safetensors', 'wb') as f:
        f.write(struct.pack('<Q', len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    x.numpy().astype('<f4').tofile(out / 'input.bin')
    logits.numpy().astype('<f4').tofile(out / 'logits.bin')
    print(f'{out}: {len(state)} tensors, logits {tuple(logits.shape)}, torch {torch.__version__}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
