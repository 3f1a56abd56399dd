"""
Cross-check EffiTag's EfficientNet against timm's TensorFlow-compatible ports (tf_efficientnet_*,
tf_efficientnetv2_*), an implementation written independently of ours and of Keras.

For each directory written by prepare.ts (Keras-named weights, the ONNX graph EffiTag exported from
them, and test images), this loads the same weights into the timm model, runs both on the same images, and compares
log-probabilities. It also runs the official ONNX checker on the exported graph. Two controls show
the comparison would notice a wrong network: timm with one BatchNorm statistic in the middle of the
network shifted by 0.01, and timm on other images.

    python3 check.py DIR [DIR...]      (needs torch, timm, onnx, onnxruntime, numpy)

Weight layouts: Keras kernels are HWIO, PyTorch's OIHW; depthwise kernels (k, k, C, 1) become
(C, 1, k, k); the classifier's (in, out) is transposed. The input normalisation is read from the
ONNX graph itself (EffiTag folds Rescaling/Normalization into one per-channel multiply-add).
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
import timm
import torch

# Keras layer suffix inside a block -> timm module path, per timm block class.
BLOCK_MAPS = {
    'DepthwiseSeparableConv': {'dwconv': 'conv_dw', 'bn': 'bn1', 'se_reduce': 'se.conv_reduce', 'se_expand': 'se.conv_expand',
                               'project_conv': 'conv_pw', 'project_bn': 'bn2'},
    'InvertedResidual': {'expand_conv': 'conv_pw', 'expand_bn': 'bn1', 'dwconv': 'conv_dw', 'dwconv2': 'conv_dw', 'bn': 'bn2',
                         'se_reduce': 'se.conv_reduce', 'se_expand': 'se.conv_expand', 'project_conv': 'conv_pwl', 'project_bn': 'bn3'},
    'EdgeResidual': {'expand_conv': 'conv_exp', 'expand_bn': 'bn1', 'se_reduce': 'se.conv_reduce', 'se_expand': 'se.conv_expand',
                     'project_conv': 'conv_pwl', 'project_bn': 'bn2'},
    'ConvBnAct': {'project_conv': 'conv', 'project_bn': 'bn1'},
}
TOP_MAP = {'stem_conv': 'conv_stem', 'stem_bn': 'bn1', 'top_conv': 'conv_head', 'top_bn': 'bn2', 'predictions': 'classifier'}
LEAF = {'kernel:0': 'weight', 'depthwise_kernel:0': 'weight', 'bias:0': 'bias', 'gamma:0': 'weight', 'beta:0': 'bias',
        'moving_mean:0': 'running_mean', 'moving_variance:0': 'running_var'}


def load_artifact(d: Path):
    manifest = json.loads((d / 'manifest.json').read_text())
    raw = np.fromfile(d / 'weights.bin', dtype='<f4')
    tensors = {}
    for t in manifest['tensors']:
        n = int(np.prod(t['shape']))
        tensors[t['name']] = raw[t['offset']:t['offset'] + n].reshape(t['shape'])
    return manifest, tensors


def to_torch_layout(leaf: str, w: np.ndarray) -> np.ndarray:
    if leaf == 'depthwise_kernel:0':
        return w.transpose(2, 3, 0, 1)  # (k, k, C, 1) -> (C, 1, k, k)
    if leaf == 'kernel:0' and w.ndim == 4:
        return w.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if leaf == 'kernel:0' and w.ndim == 2:
        return w.T  # Dense (in, out) -> Linear (out, in)
    return w


def timm_state(model: torch.nn.Module, tensors: dict) -> dict:
    block_class = {}
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            block_class[f'block{s + 1}{chr(97 + j)}'] = (f'blocks.{s}.{j}', type(block).__name__)
    state, unmapped = {}, []
    for name, w in tensors.items():
        layer, leaf = name.split('/', 1)
        if layer == 'normalization':
            continue  # folded into the ONNX graph's input multiply-add, applied to timm's input below
        if layer in TOP_MAP:
            path = TOP_MAP[layer]
        else:
            prefix, suffix = layer.split('_', 1)
            if prefix not in block_class:
                unmapped.append(name)
                continue
            base, cls = block_class[prefix]
            sub = BLOCK_MAPS.get(cls, {}).get(suffix)
            if sub is None:
                unmapped.append(f'{name} ({cls})')
                continue
            path = f'{base}.{sub}'
        state[f'{path}.{LEAF[leaf]}'] = torch.from_numpy(np.ascontiguousarray(to_torch_layout(leaf, w)))
    if unmapped:
        raise SystemExit(f'unmapped Keras weights: {unmapped[:10]}')
    return state


def preprocessing(model_proto) -> tuple:
    init = {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}
    return init['preprocess_scale_value'].astype(np.float32), init['preprocess_shift_value'].astype(np.float32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def check(d: Path) -> bool:
    manifest, tensors = load_artifact(d)
    variant = manifest['variant']
    timm_name = f'tf_efficientnetv2_{variant[3:]}' if variant.startswith('v2-') else f'tf_efficientnet_{variant}'
    res = manifest['resolution']
    print(f'== {variant} ({res}px) vs timm {timm_name}, timm {timm.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}')

    proto = onnx.load(str(d / 'model.onnx'))
    onnx.checker.check_model(proto, full_check=True)
    print('   onnx.checker (full_check): ok')

    model = timm.create_model(timm_name, pretrained=False, num_classes=manifest['classes']).eval()
    state = timm_state(model, tensors)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing or unexpected:
        print(f'   state dict mismatch: missing {missing[:10]}, unexpected {unexpected[:10]}')
        return False
    timm_params = sum(p.numel() for p in model.parameters())
    print(f'   all {len(state)} Keras tensors loaded into timm; timm trainable parameters {timm_params:,}')

    # The images prepare.ts calibrated the BatchNorm statistics on (see there why).
    images = np.fromfile(d / 'images.bin', dtype='<f4').reshape(-1, res, res, 3)

    session = ort.InferenceSession(str(d / 'model.onnx'), providers=['CPUExecutionProvider'])
    ours = session.run(None, {session.get_inputs()[0].name: images})[0].astype(np.float64)
    scale, shift = preprocessing(proto)

    def run_timm(m: torch.nn.Module, x_nhwc: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray((x_nhwc * scale + shift).transpose(0, 3, 1, 2)))
        with torch.no_grad():
            return log_softmax(m(x).double().numpy())

    theirs = run_timm(model, images)
    ours_lp = np.log(np.maximum(ours, 1e-300))  # EffiTag's graph ends in softmax (Keras 'predictions')
    # Compare classes with p > e^-30: below that, float32 softmax outputs keep few significant digits.
    comparable = theirs > -30

    def delta(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b)[comparable].max())

    diff = delta(ours_lp, theirs)
    top_ours, top_theirs = np.argsort(-ours, axis=1)[:, :5], np.argsort(-theirs, axis=1)[:, :5]
    # Control 1: one BatchNorm's moving mean, halfway through the network, shifted by 0.01.
    stage = model.blocks[len(model.blocks) // 2][0]
    bn = next(m for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_mean += 0.01
    shifted = delta(run_timm(model, images), theirs)
    with torch.no_grad():
        bn.running_mean -= 0.01
    # Control 2: the same network on the images in another order.
    other = delta(np.roll(theirs, 1, axis=0), theirs)
    print(f'   log-probability spread across classes (std) {theirs.std(axis=1).mean():.2f}; {comparable.sum()} of {comparable.size} (image, class) pairs compared')
    print(f'   max |log p_effitag - log p_timm| = {diff:.2e}; max |p_effitag - p_timm| = {np.abs(ours - np.exp(theirs)).max():.2e}')
    print(f'   top-5 identical for all {len(images)} images: {bool((top_ours == top_theirs).all())}')
    print(f'   controls: one BatchNorm mean +0.01 -> {shifted:.2e}; other images -> {other:.2e}')
    ok = diff < 1e-2 * min(shifted, other) and bool((top_ours == top_theirs).all())
    print(f'   {"PASS" if ok else "FAIL"}')
    return ok


if __name__ == '__main__':
    results = [check(Path(d)) for d in sys.argv[1:]]
    sys.exit(0 if results and all(results) else 1)
