/**
 * Training on tfjs's WebAssembly backend. The wasm backend runs EfficientNet forward 30× faster than
 * the pure-JS `cpu` backend here, but it lacks three kernels backpropagation needs:
 * Conv2DBackpropFilter, DepthwiseConv2dNativeBackpropInput and DepthwiseConv2dNativeBackpropFilter
 * (the `cpu` backend's versions take 13 of the 14 s of a tiny network's training step). This module
 * builds those three from ops the wasm backend has — strided
 * slices, matrix products, padding — so `model.fit` runs on wasm.
 *
 * For a k×k kernel and stride s, with x padded as the forward pass padded it, each filter tap
 * (i, j) sees the strided window x[:, i::s, j::s, :] of the output's size:
 *   conv filter grad       dW[i, j] = window(i, j)ᵀ · dy           (one matMul per tap)
 *   depthwise filter grad  dW[i, j] = Σ_b,h,w window(i, j) ⊙ dy     (one multiply-and-sum per tap)
 *   depthwise input grad   dx = depthwise(pad(spread(dy, s), k − 1), W turned 180°), cropped to x
 * They are registered as the wasm backend's kernels for those three names, so the gradients tfjs
 * already defines (fused convolutions included) use them; other backends keep their own.
 */
import { tf } from './tfjs-backend.ts';

type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;

interface ConvGeometry {
  pad: { top: number; bottom: number; left: number; right: number };
  outH: number;
  outW: number;
  sh: number;
  sw: number;
}

function geometry(xShape: number[], filterShape: number[], strides: number | [number, number], pad: Pad, depthwise: boolean): ConvGeometry {
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    1,
    pad as 'valid',
    undefined,
    depthwise,
  );
  return { pad: info.padInfo, outH: info.outHeight, outW: info.outWidth, sh: info.strideHeight, sw: info.strideWidth };
}

/** x padded as the forward pass did, and the window tap (i, j) of the filter sees. */
function windows(x: tf.Tensor4D, g: ConvGeometry) {
  const [b, , , c] = x.shape;
  const { sh, sw, outH, outW } = g;
  const xp = tf.pad(x, [
    [0, 0],
    [g.pad.top, g.pad.bottom],
    [g.pad.left, g.pad.right],
    [0, 0],
  ]);
  if (sh === 1 && sw === 1) return (i: number, j: number) => tf.slice(xp, [0, i, j, 0], [b, outH, outW, c]) as tf.Tensor4D;
  // At stride s, each tap reads one of s×s phases of the padded input (rows ≡ i mod s, columns ≡ j
  // mod s): s² strided copies per layer, then a plain slice per tap (wasm's StridedSlice is slow).
  const phases = new Map<string, tf.Tensor4D>();
  const phase = (pi: number, pj: number) => {
    const id = `${pi},${pj}`;
    if (!phases.has(id)) phases.set(id, tf.stridedSlice(xp, [0, pi, pj, 0], xp.shape, [1, sh, sw, 1]) as tf.Tensor4D);
    return phases.get(id)!;
  };
  return (i: number, j: number) =>
    tf.slice(phase(i % sh, j % sw), [0, Math.floor(i / sh), Math.floor(j / sw), 0], [b, outH, outW, c]) as tf.Tensor4D;
}

/** A filter gradient built tap by tap: `tap` turns one strided window of x into that tap's slice of dW. */
function filterGrad(
  x: tf.Tensor4D,
  filterShape: number[],
  strides: number | [number, number],
  pad: Pad,
  depthwise: boolean,
  tap: (window: tf.Tensor4D) => tf.Tensor,
): tf.Tensor4D {
  return tf.tidy(() => {
    const [kh, kw] = filterShape;
    const window = windows(x, geometry(x.shape, filterShape, strides, pad, depthwise));
    const taps: tf.Tensor[] = [];
    for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) taps.push(tap(window(i, j)));
    return tf.stack(taps).reshape(filterShape) as tf.Tensor4D;
  });
}

export function conv2dFilterGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: number[],
  strides: number | [number, number],
  pad: Pad,
): tf.Tensor4D {
  const [, , inC, outC] = filterShape;
  return tf.tidy(() => {
    const dy2 = dy.reshape([-1, outC]);
    return filterGrad(x, filterShape, strides, pad, false, (w) => tf.matMul(w.reshape([-1, inC]), dy2, true, false));
  });
}

export function depthwiseFilterGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: number[],
  strides: number | [number, number],
  pad: Pad,
): tf.Tensor4D {
  const multiplier = filterShape[3];
  if (multiplier !== 1) throw new Error(`depthwise gradient: channel multiplier ${multiplier} is not supported (EfficientNet uses 1)`);
  return filterGrad(x, filterShape, strides, pad, true, (w) => tf.sum(tf.mul(w, dy), [0, 1, 2]));
}

/** Insert s − 1 zeros between the rows and columns of t (its values land at multiples of s). */
function spread(t: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  const [b, h, w, c] = t.shape;
  let out: tf.Tensor4D = t;
  if (sh > 1) out = tf.concat([out.expandDims(2), tf.zeros([b, h, sh - 1, w, c])], 2).reshape([b, h * sh, w, c]) as tf.Tensor4D;
  if (sw > 1) {
    const hh = out.shape[1];
    out = tf.concat([out.expandDims(3), tf.zeros([b, hh, w, sw - 1, c])], 3).reshape([b, hh, w * sw, c]) as tf.Tensor4D;
  }
  return out;
}

export function depthwiseInputGrad(
  xShape: number[],
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  strides: number | [number, number],
  pad: Pad,
): tf.Tensor4D {
  return tf.tidy(() => {
    const [kh, kw, , multiplier] = filter.shape;
    if (multiplier !== 1) throw new Error(`depthwise gradient: channel multiplier ${multiplier} is not supported (EfficientNet uses 1)`);
    const g = geometry(xShape, filter.shape, strides, pad, true);
    const [b, h, w, c] = xShape;
    const ph = h + g.pad.top + g.pad.bottom;
    const pw = w + g.pad.left + g.pad.right;
    // The gradient of the padded input is the full correlation of dy (spread by the stride) with the
    // filter turned 180°: one depthwise convolution, which the wasm backend runs natively.
    const spreadH = (g.outH - 1) * g.sh + 1;
    const spreadW = (g.outW - 1) * g.sw + 1;
    const spreadDy = spread(dy, g.sh, g.sw).slice([0, 0, 0, 0], [b, spreadH, spreadW, c]);
    const full = tf.pad(spreadDy, [
      [0, 0],
      [kh - 1, kh - 1],
      [kw - 1, kw - 1],
      [0, 0],
    ]);
    const turned = tf.reverse(filter, [0, 1]) as tf.Tensor4D;
    // Covers padded rows [0, spreadH + kh − 1); rows a stride leaves unread get no gradient (zeros).
    const dxp = tf.depthwiseConv2d(full as tf.Tensor4D, turned, 1, 'valid');
    const covered = tf.pad(dxp, [
      [0, 0],
      [0, ph - dxp.shape[1]],
      [0, pw - dxp.shape[2]],
      [0, 0],
    ]);
    return covered.slice([0, g.pad.top, g.pad.left, 0], [b, h, w, c]) as tf.Tensor4D;
  });
}

let installed = false;

/** Run an op-built kernel on TensorInfos: inputs wrapped as tensors, the result returned as a tensor (the engine keeps it). */
function opKernel(
  kernelName: string,
  run: (inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown>) => tf.Tensor,
): tf.KernelConfig {
  return {
    kernelName,
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) =>
      tf.tidy(() => {
        // Wrapping shares the input's data; one more reference keeps the wrapper's disposal from freeing it.
        const wrapped = Object.fromEntries(
          Object.entries(inputs).map(([name, info]) => {
            const t = tf.engine().makeTensorFromTensorInfo(info as tf.TensorInfo);
            tf.engine().backend.incRef((info as tf.TensorInfo).dataId);
            return [name, t];
          }),
        );
        return run(wrapped, attrs as Record<string, unknown>);
      }) as unknown as tf.TensorInfo,
  };
}

/**
 * Register the three missing backpropagation kernels for the wasm backend (once; other backends are
 * untouched). Returns whether the active backend is wasm, i.e. whether they are what training uses.
 */
export function enableWasmTraining(): boolean {
  if (!installed) {
    const noDilation = (d: unknown) => d == null || d === 1 || (Array.isArray(d) && d.every((v) => v === 1));
    const check = (attrs: Record<string, unknown>) => {
      if (!noDilation(attrs.dilations) || attrs.dataFormat === 'NCHW')
        throw new Error('wasm training: only NHWC convolutions without dilation');
    };
    type Strides = number | [number, number];
    tf.registerKernel(
      opKernel('Conv2DBackpropFilter', ({ x, dy }, a) => {
        check(a);
        return conv2dFilterGrad(x as tf.Tensor4D, dy as tf.Tensor4D, a.filterShape as number[], a.strides as Strides, a.pad as Pad);
      }),
    );
    tf.registerKernel(
      opKernel('DepthwiseConv2dNativeBackpropFilter', ({ x, dy }, a) => {
        check(a);
        return depthwiseFilterGrad(x as tf.Tensor4D, dy as tf.Tensor4D, a.filterShape as number[], a.strides as Strides, a.pad as Pad);
      }),
    );
    tf.registerKernel(
      opKernel('DepthwiseConv2dNativeBackpropInput', ({ dy, filter }, a) => {
        check(a);
        return depthwiseInputGrad(a.inputShape as number[], dy as tf.Tensor4D, filter as tf.Tensor4D, a.strides as Strides, a.pad as Pad);
      }),
    );
    installed = true;
  }
  return tf.getBackend() === 'wasm';
}
