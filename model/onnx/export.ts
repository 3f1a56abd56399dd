/**
 * ONNX export of a built variant with its weights, from the same layer plan the tfjs model is built
 * from. The graph takes raw NHWC float pixels in [0, 255] with a dynamic batch and returns softmax
 * probabilities and, second, the pooled features they are computed from (or only the pooled features
 * without top). On the way:
 *
 * - preprocessing (rescale + normalisation) becomes one per-channel Mul + Add on the input;
 * - every BatchNorm is folded into the convolution before it (W·s, b·s + β − μ·s, s = γ/√(σ²+ε));
 * - TF 'same' padding and the V1 ZeroPadding2D layers become explicit, asymmetric conv pads
 *   (extra at bottom/right), computed from the static spatial sizes;
 * - HWIO kernels become OIHW; depthwise kernels become grouped convolutions;
 * - dropout layers vanish (identity at inference).
 */
import type { LayerNode, ModelPlan } from '../plan.ts';
import { AttributeType, ModelProto, TensorType } from './schema.ts';

/**
 * Static int8 quantization as QDQ pairs (onnxruntime fuses DequantizeLinear → Conv → QuantizeLinear
 * into QLinearConv, u8 activations × s8 weights, its VNNI kernels on CPUs that have them):
 * per-channel symmetric int8 weights, int32 biases at scale x_scale·w_scale, per-tensor asymmetric
 * uint8 activations from calibrated ranges. Everything else (swish, squeeze-and-excite gating, the
 * residual adds, the head) stays float.
 */
export interface QuantizeSpec {
  /** Calibrated [min, max] of every tensor a quantized node reads or writes (names from `exportProbed`). */
  ranges: Record<string, [number, number]>;
  /** 'conv': only convolutions (float swish between); 'all': also swish, SE gating, residual adds, pooling. */
  ops: 'conv' | 'all';
  /** Keep the squeeze-and-excite branch in float. */
  floatSqueezeExcite: boolean;
  /**
   * Weight range: 8 → [-127, 127]; 7 → [-63, 63] (default 8, the first int8 models'). x86 CPUs
   * without VNNI multiply u8 × s8 with VPMADDUBSW, which saturates a pair of products at 16 bits
   * (255·127·2 > 32767); 7-bit weights cannot (255·63·2 < 32767), at one bit of weight precision.
   */
  weightBits?: 7 | 8;
  /**
   * Benchmark experiments on B0's int8 speed (bench/int8.ts; no artifact records them): 'uint8' weights
   * (zero point 128: onnxruntime's U8U8 kernels, which widen to 16 bits and cannot saturate) instead of
   * int8 (U8S8); one weight scale per tensor instead of per output channel.
   */
  weightType?: 'int8' | 'uint8';
  perTensorWeights?: boolean;
}

/**
 * Bump when the exported graph changes, so cached exports are regenerated (it is part of the cache
 * file name, model/onnx/cache.ts). 4: a model with a top also outputs its pooled `features`.
 */
export const EXPORTER_VERSION = 4;

/** The second output of a graph with a classifier top: the pooled features (global average pool, before dropout and the classifier). */
export const FEATURES_OUTPUT = 'features';
const OPSET = 17;

interface OnnxNode {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  attribute: object[];
}
interface Initializer {
  name: string;
  dims: number[];
  data: Float32Array | Int8Array | Uint8Array | Int32Array;
  type?: number;
}

const attrInts = (name: string, ints: number[]) => ({ name, type: AttributeType.INTS, ints: ints.map((i) => i) });
const attrInt = (name: string, i: number) => ({ name, type: AttributeType.INT, i: i });

/** TF 'same' padding along one axis: total = max((⌈n/s⌉−1)·s + k − n, 0), extra at the end. */
function samePad(size: number, kernel: number, stride: number): [number, number] {
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + kernel - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

class GraphWriter {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: Initializer[] = [];
  /** Plan layer name → ONNX tensor name holding its output (NCHW from the transpose on). */
  readonly tensorOf = new Map<string, string>();

  node(op: string, name: string, input: string[], attributes: object[] = [], output = name): string {
    this.nodes.push({ op_type: op, name, input, output: [output], attribute: attributes });
    return output;
  }
  init(name: string, dims: number[], data: Initializer['data'], type: number = TensorType.FLOAT): string {
    this.initializers.push({ name, dims, data, type });
    return name;
  }
}

/** uint8 asymmetric scale and zero point for a range (widened to hold 0, as the zero padding needs). */
export function activationQuant([lo, hi]: [number, number]): { scale: number; zeroPoint: number } {
  const min = Math.min(lo, 0),
    max = Math.max(hi, 0);
  const scale = max > min ? (max - min) / 255 : 1;
  return { scale, zeroPoint: Math.max(0, Math.min(255, Math.round(-min / scale))) };
}

const QUANTIZABLE = new Set(['Conv', 'Sigmoid', 'Mul', 'Add', 'GlobalAveragePool']);

/** The nodes a spec quantizes: convolutions always; with `ops: 'all'` also swish, SE gating, residual adds and pooling. */
function quantizedNodes(g: GraphWriter, spec: Pick<QuantizeSpec, 'ops' | 'floatSqueezeExcite'>): OnnxNode[] {
  const inits = new Set(g.initializers.map((i) => i.name));
  return g.nodes.filter(
    (n) =>
      QUANTIZABLE.has(n.op_type) &&
      !n.name.startsWith('preprocess') &&
      (spec.ops === 'all' || n.op_type === 'Conv') &&
      !(spec.floatSqueezeExcite && /_se_/.test(n.name)) &&
      (n.op_type === 'Conv' || !n.input.some((i) => inits.has(i))),
  );
}

/**
 * What a convolution's quantized output is: its own, or, where a ReLU6 (Clip) is its only reader, the
 * Clip's. Conv → Clip → QuantizeLinear is the pattern onnxruntime folds into one QLinearConv (its
 * ClipQuantFusion drops a Clip whose bounds hold the quantized range, as a calibrated [0, ≤6] range
 * does); Conv → Q → DQ → Clip → Q would leave a float Clip between two int8 convolutions.
 */
function convOutput(g: GraphWriter, conv: OnnxNode): string {
  const t = conv.output[0];
  const readers = g.nodes.filter((n) => n.input.includes(t));
  return readers.length === 1 && readers[0].op_type === 'Clip' ? readers[0].output[0] : t;
}

/** The activation tensors (not weights) those nodes read and write. */
function activationTensors(g: GraphWriter, nodes: readonly OnnxNode[]): Set<string> {
  const out = new Set<string>();
  for (const n of nodes) {
    for (const i of n.op_type === 'Conv' ? [n.input[0]] : n.input) out.add(i);
    out.add(n.op_type === 'Conv' ? convOutput(g, n) : n.output[0]);
  }
  return out;
}

/**
 * Rewrite the float graph into QDQ form: after each producer of a quantized tensor a QuantizeLinear →
 * DequantizeLinear pair that every consumer reads; each quantized conv's weights and bias as integers.
 */
function quantizeGraph(g: GraphWriter, spec: QuantizeSpec): void {
  const nodes = quantizedNodes(g, spec);
  const tensors = activationTensors(g, nodes);
  const inits = new Map(g.initializers.map((i) => [i.name, i]));
  const convs = new Set(nodes.filter((n) => n.op_type === 'Conv'));
  const scaleOf = new Map<string, number>();
  const dqOf = new Map<string, string>();
  const original = g.nodes.splice(0);
  const quantize = (t: string, range: [number, number] | undefined) => {
    if (!range) throw new Error(`int8 export: no calibrated range for ${t}`);
    const { scale, zeroPoint } = activationQuant(range);
    const sc = g.init(`${t}/q_scale`, [], Float32Array.of(scale));
    const z = g.init(`${t}/q_zero`, [], Uint8Array.of(zeroPoint), TensorType.UINT8);
    const q = g.node('QuantizeLinear', `${t}/quantize`, [t, sc, z]);
    dqOf.set(t, g.node('DequantizeLinear', `${t}/dequantize`, [q, sc, z]));
    scaleOf.set(t, scale);
  };
  // The graph input, where the stem convolution reads it directly (the NCHW graph): its range is the stem input's.
  const produced = new Set(original.flatMap((n) => n.output));
  for (const t of tensors) if (!produced.has(t) && !inits.has(t)) quantize(t, spec.ranges[t] ?? spec.ranges[STEM_INPUT]);
  for (const n of original) {
    const input = n.input.map((i) => dqOf.get(i) ?? i);
    if (convs.has(n)) {
      const w = inits.get(n.input[1])!,
        b = inits.get(n.input[2])!;
      const [wq, bq] = quantizeConvParams(
        g,
        n.name,
        w.dims,
        w.data as Float32Array,
        b.data as Float32Array,
        scaleOf.get(n.input[0])!,
        spec.weightBits === 7 ? 63 : 127,
        { uint8: spec.weightType === 'uint8', perTensor: spec.perTensorWeights === true },
      );
      input[1] = wq;
      input[2] = bq;
    }
    g.nodes.push({ ...n, input });
    const t = n.output[0];
    if (tensors.has(t)) quantize(t, spec.ranges[t]);
  }
  // Drop the float weights the integer ones replaced.
  const used = new Set(g.nodes.flatMap((n) => n.input));
  const kept = g.initializers.filter((i) => used.has(i.name));
  g.initializers.splice(0, g.initializers.length, ...kept);
}

/** Conv weights → per-output-channel symmetric int8 and bias → int32, each behind a DequantizeLinear. */
function quantizeConvParams(
  g: GraphWriter,
  name: string,
  dims: number[],
  kernel: Float32Array,
  bias: Float32Array,
  inputScale: number,
  qmax: number,
  layout: { uint8: boolean; perTensor: boolean } = { uint8: false, perTensor: false },
): [string, string] {
  const cout = dims[0];
  const perOut = kernel.length / cout;
  const wScale = new Float32Array(cout);
  const wq = new Int8Array(kernel.length);
  const bq = new Int32Array(cout);
  const bScale = new Float32Array(cout);
  for (let o = 0; o < cout; o++) {
    let m = 0;
    for (let j = 0; j < perOut; j++) m = Math.max(m, Math.abs(kernel[o * perOut + j]));
    // int8 weights in [-qmax, qmax] (symmetric; QuantizeSpec.weightBits says why qmax may be 63).
    wScale[o] = m > 0 ? m / qmax : 1;
  }
  if (layout.perTensor) wScale.fill(Math.max(...wScale));
  for (let o = 0; o < cout; o++) {
    for (let j = 0; j < perOut; j++) wq[o * perOut + j] = Math.round(kernel[o * perOut + j] / wScale[o]);
    bScale[o] = inputScale * wScale[o];
    bq[o] = Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.round(bias[o] / bScale[o])));
  }
  // Per tensor: scalar scales and zero points, no axis (the experiment; per channel is what artifacts use).
  const n = layout.perTensor ? 1 : cout;
  const dimsQ = layout.perTensor ? [] : [cout];
  const axis = layout.perTensor ? [] : [attrInt('axis', 0)];
  const w = g.node(
    'DequantizeLinear',
    `${name}/W_dequantize`,
    layout.uint8
      ? [
          g.init(
            `${name}/W_q`,
            dims,
            Uint8Array.from(wq, (v) => v + 128),
            TensorType.UINT8,
          ),
          g.init(`${name}/W_scale`, dimsQ, wScale.slice(0, n)),
          g.init(`${name}/W_zero`, dimsQ, new Uint8Array(n).fill(128), TensorType.UINT8),
        ]
      : [
          g.init(`${name}/W_q`, dims, wq, TensorType.INT8),
          g.init(`${name}/W_scale`, dimsQ, wScale.slice(0, n)),
          g.init(`${name}/W_zero`, dimsQ, new Int8Array(n), TensorType.INT8),
        ],
    axis,
  );
  const b = g.node(
    'DequantizeLinear',
    `${name}/B_dequantize`,
    [
      g.init(`${name}/B_q`, [cout], bq, TensorType.INT32),
      g.init(`${name}/B_scale`, dimsQ, bScale.slice(0, n)),
      g.init(`${name}/B_zero`, dimsQ, new Int32Array(n), TensorType.INT32),
    ],
    axis,
  );
  return [w, b];
}

function weight(weights: ReadonlyMap<string, Float32Array>, name: string): Float32Array {
  const w = weights.get(name);
  if (!w) throw new Error(`ONNX export: missing weight ${name}`);
  return w;
}

/** HWIO → OIHW (regular conv) or HW C 1 → C 1 H W (depthwise). */
function toOihw(kernel: Float32Array, kh: number, kw: number, ci: number, co: number): Float32Array {
  const out = new Float32Array(kernel.length);
  for (let h = 0; h < kh; h++)
    for (let w = 0; w < kw; w++)
      for (let i = 0; i < ci; i++)
        for (let o = 0; o < co; o++) {
          out[((o * ci + i) * kh + h) * kw + w] = kernel[((h * kw + w) * ci + i) * co + o];
        }
  return out;
}

export interface ExportOptions {
  /** Producer metadata recorded in the model (variant, weights hash). */
  metadata?: Record<string, string>;
  /** Also output every tensor a convolution reads or writes (calibration); their names in `probes`. */
  probe?: boolean;
  /** Emit the int8 (QDQ) graph with these ranges. */
  quantize?: QuantizeSpec;
  /**
   * The input (default 'nhwc'): raw [0, 255] NHWC pixels, normalised inside the graph, as tfjs, training
   * and the parity scripts feed them. 'nchw', the engine's: normalised NCHW pixels, the caller applying
   * `inputNormalization` while it packs the batch (inference/image.ts toNchwBatch), as torchvision's
   * export takes them; the graph then starts at the stem convolution (no Mul, Add, Transpose passes
   * over the input: measured in README, Engines).
   */
  layout?: 'nhwc' | 'nchw';
}

/** The float graph that also outputs every tensor a convolution reads or writes (calibration), and their names. */
export function exportProbed(plan: ModelPlan, weights: ReadonlyMap<string, Float32Array>): { bytes: Uint8Array; probes: string[] } {
  const probes: string[] = [];
  const bytes = exportOnnx(plan, weights, { probe: true }, probes);
  return { bytes, probes };
}

/**
 * The plan's input preprocessing (its leading rescale and normalisation layers) as one per-channel
 * y = x·scale + shift on raw [0, 255] pixels; `last` is the last of those layers (`layers`).
 */
export function inputNormalization(
  plan: ModelPlan,
  weights: ReadonlyMap<string, Float32Array>,
): { scale: number[]; shift: number[]; last: string; layers: string[] } {
  const scale = [1, 1, 1],
    shift = [0, 0, 0];
  const consumers = new Map<string, LayerNode[]>();
  for (const n of plan.nodes) for (const i of n.inputs) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  const single = (name: string) => {
    const c = consumers.get(name) ?? [];
    return c.length === 1 ? c[0] : undefined;
  };
  let last = plan.nodes[0].name;
  const layers: string[] = [];
  for (let next = single(last); next && (next.op === 'rescale' || next.op === 'normalize'); next = single(last)) {
    for (let c = 0; c < 3; c++) {
      if (next.op === 'rescale') {
        scale[c] *= next.scale;
        shift[c] = shift[c] * next.scale + next.offset;
      } else {
        const mean = next.constant ? next.constant.mean[c] : weight(weights, `${next.name}/mean:0`)[c];
        const variance = next.constant ? next.constant.variance[c] : weight(weights, `${next.name}/variance:0`)[c];
        const inv = 1 / Math.max(Math.sqrt(variance), 1e-7);
        scale[c] *= inv;
        shift[c] = (shift[c] - mean) * inv;
      }
    }
    layers.push(next.name);
    last = next.name;
  }
  return { scale, shift, last, layers };
}

/**
 * The stem convolution's input: in the NHWC graph the transposed, normalised pixels; in the NCHW graph
 * the graph input itself. Its calibrated range is recorded under this name for both.
 */
const STEM_INPUT = 'to_nchw';

export function exportOnnx(
  plan: ModelPlan,
  weights: ReadonlyMap<string, Float32Array>,
  options: ExportOptions = {},
  probes: string[] = [],
): Uint8Array {
  const g = new GraphWriter();
  const byName = new Map(plan.nodes.map((n) => [n.name, n]));
  const consumers = new Map<string, LayerNode[]>();
  for (const n of plan.nodes) for (const i of n.inputs) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  const single = (name: string) => {
    const c = consumers.get(name) ?? [];
    return c.length === 1 ? c[0] : undefined;
  };

  // Input preprocessing: rescale(s) and normalisation as y = x·scale + shift per channel, in the graph
  // (NHWC) or applied by the caller as it packs the batch (NCHW: toNchwBatch).
  const { scale: a, shift: b, last: cursor, layers } = inputNormalization(plan, weights);
  const skipped = new Set<string>(layers);
  const inputName = 'images';
  const nchw = options.layout === 'nchw';
  let x = inputName;
  if (!nchw) {
    x = g.node('Mul', 'preprocess_scale', [inputName, g.init('preprocess_scale_value', [3], Float32Array.from(a))]);
    x = g.node('Add', 'preprocess_shift', [x, g.init('preprocess_shift_value', [3], Float32Array.from(b))]);
    x = g.node('Transpose', STEM_INPUT, [x], [attrInts('perm', [0, 3, 1, 2])]);
  }
  g.tensorOf.set(cursor, x);

  const shapeOf = (name: string) => byName.get(name)!.outShape;

  for (const node of plan.nodes) {
    if (node.op === 'input' || skipped.has(node.name)) continue;
    const input = () => {
      const t = g.tensorOf.get(node.inputs[0]);
      if (!t) throw new Error(`ONNX export: ${node.name} reads ${node.inputs[0]}, which was not lowered`);
      return t;
    };
    switch (node.op) {
      case 'zeropad': {
        // Folded into the conv that consumes it (checked there).
        const consumer = single(node.name);
        if (!consumer || (consumer.op !== 'conv' && consumer.op !== 'dwconv') || consumer.padding !== 'valid') {
          throw new Error(`ONNX export: ${node.name} is not followed by a 'valid' convolution`);
        }
        g.tensorOf.set(node.name, input());
        break;
      }
      case 'conv':
      case 'dwconv': {
        let src = node.inputs[0];
        let pads: [number, number, number, number];
        const [h, w] = shapeOf(src);
        if (node.padding === 'same') {
          const [t, bm] = samePad(h, node.kernel, node.stride),
            [l, r] = samePad(w, node.kernel, node.stride);
          pads = [t, l, bm, r];
        } else {
          const pad = byName.get(src);
          pads = pad?.op === 'zeropad' ? [pad.pad[0][0], pad.pad[1][0], pad.pad[0][1], pad.pad[1][1]] : [0, 0, 0, 0];
          if (pad?.op === 'zeropad') src = pad.inputs[0];
        }
        const cin = shapeOf(src).at(-1)!;
        const cout = node.op === 'conv' ? node.filters : cin;
        const k = node.kernel;
        const kernel =
          node.op === 'conv'
            ? toOihw(weight(weights, `${node.name}/kernel:0`), k, k, cin, cout)
            : toOihw(weight(weights, `${node.name}/depthwise_kernel:0`), k, k, cin, 1); // written as [C,1,k,k]
        const bias =
          node.op === 'conv' && node.useBias ? Float32Array.from(weight(weights, `${node.name}/bias:0`)) : new Float32Array(cout);
        // Fold a BatchNorm that is this conv's only consumer.
        let outName = node.name;
        const bn = single(node.name);
        if (bn?.op === 'bn') {
          const gamma = weight(weights, `${bn.name}/gamma:0`),
            beta = weight(weights, `${bn.name}/beta:0`);
          const mean = weight(weights, `${bn.name}/moving_mean:0`),
            variance = weight(weights, `${bn.name}/moving_variance:0`);
          const perOut = kernel.length / cout;
          for (let o = 0; o < cout; o++) {
            const s = gamma[o] / Math.sqrt(variance[o] + bn.epsilon);
            for (let j = 0; j < perOut; j++) kernel[o * perOut + j] *= s;
            bias[o] = bias[o] * s + beta[o] - mean[o] * s;
          }
          skipped.add(bn.name);
          outName = bn.name;
        }
        const dims = node.op === 'conv' ? [cout, cin, k, k] : [cin, 1, k, k];
        const attrs = [
          attrInts('kernel_shape', [k, k]),
          attrInts('strides', [node.stride, node.stride]),
          attrInts('pads', pads),
          ...(node.op === 'dwconv' ? [attrInt('group', cin)] : []),
        ];
        const srcTensor = g.tensorOf.get(src)!;
        let y = g.node(
          'Conv',
          node.name,
          [srcTensor, g.init(`${node.name}/W`, dims, kernel), g.init(`${node.name}/B`, [cout], bias)],
          attrs,
          `${node.name}:conv`,
        );
        if (node.op === 'conv' && node.activation !== 'linear') y = activation(g, `${node.name}:act`, y, node.activation);
        g.tensorOf.set(node.name, y);
        g.tensorOf.set(outName, y);
        break;
      }
      case 'bn': {
        // A BatchNorm not folded into a conv (none in EfficientNet, but keep the lowering honest).
        const c = node.outShape.at(-1)!;
        const gamma = weight(weights, `${node.name}/gamma:0`),
          beta = weight(weights, `${node.name}/beta:0`);
        const mean = weight(weights, `${node.name}/moving_mean:0`),
          variance = weight(weights, `${node.name}/moving_variance:0`);
        const scale = new Float32Array(c),
          shift = new Float32Array(c);
        for (let i = 0; i < c; i++) {
          scale[i] = gamma[i] / Math.sqrt(variance[i] + node.epsilon);
          shift[i] = beta[i] - mean[i] * scale[i];
        }
        let y = g.node('Mul', `${node.name}:scale`, [input(), g.init(`${node.name}/scale`, [c, 1, 1], scale)]);
        y = g.node('Add', `${node.name}:shift`, [y, g.init(`${node.name}/shift`, [c, 1, 1], shift)]);
        g.tensorOf.set(node.name, y);
        break;
      }
      case 'activation':
        g.tensorOf.set(node.name, activation(g, node.name, input(), node.activation));
        break;
      case 'gap':
      case 'gmp': {
        const pooled = g.node(node.op === 'gap' ? 'GlobalAveragePool' : 'GlobalMaxPool', node.name, [input()], [], `${node.name}:pool`);
        // SE keeps [N,C,1,1] (its reshape follows); the head flattens to [N,C].
        const next = single(node.name);
        g.tensorOf.set(
          node.name,
          next?.op === 'reshape' ? pooled : g.node('Flatten', `${node.name}:flatten`, [pooled], [attrInt('axis', 1)]),
        );
        break;
      }
      case 'reshape':
        // Only the SE reshape to [1,1,C] occurs; the pooled tensor already is [N,C,1,1].
        if (node.target.length !== 3 || node.target[0] !== 1 || node.target[1] !== 1)
          throw new Error(`ONNX export: unsupported reshape ${node.name}`);
        g.tensorOf.set(node.name, input());
        break;
      case 'multiply':
      case 'add': {
        const [p, q] = node.inputs.map((i) => g.tensorOf.get(i)!);
        g.tensorOf.set(node.name, g.node(node.op === 'add' ? 'Add' : 'Mul', node.name, [p, q]));
        break;
      }
      case 'dropout':
        g.tensorOf.set(node.name, input());
        break;
      case 'dense': {
        const cin = shapeOf(node.inputs[0]).at(-1)!;
        const y = g.node(
          'Gemm',
          node.name,
          [
            input(),
            g.init(`${node.name}/W`, [cin, node.units], Float32Array.from(weight(weights, `${node.name}/kernel:0`))),
            g.init(`${node.name}/B`, [node.units], Float32Array.from(weight(weights, `${node.name}/bias:0`))),
          ],
          [],
          `${node.name}:logits`,
        );
        g.tensorOf.set(node.name, node.activation === 'linear' ? y : activation(g, `${node.name}:act`, y, node.activation));
        break;
      }
      default:
        throw new Error(`ONNX export: no lowering for ${node.op} (${node.name})`);
    }
  }

  // (The graph input is not an output: in the NCHW graph the stem reads it directly; its range is STEM_INPUT's, probed on the NHWC graph.)
  if (options.probe)
    probes.push(...[...activationTensors(g, quantizedNodes(g, { ops: 'all', floatSqueezeExcite: false }))].filter((t) => t !== inputName));
  if (options.quantize) quantizeGraph(g, options.quantize);

  // Outputs: probabilities [N, classes] with top; pooled features [N, C]; or the NHWC feature map.
  let output = g.tensorOf.get(plan.output)!;
  const outShape = plan.nodes.find((n) => n.name === plan.output)!.outShape;
  const outputName = plan.includeTop ? 'probabilities' : 'features';
  if (outShape.length === 3) output = g.node('Transpose', 'to_nhwc', [output], [attrInts('perm', [0, 2, 3, 1])]);
  g.node('Identity', outputName, [output]);
  // With a top, the pooled features too (second, so readers of the first output are unchanged): the
  // worker's image embeddings come from the same inference as the tags. The head's pool is the
  // plan's last global pooling (the squeeze-and-excite ones come before it).
  const pool = plan.includeTop ? [...plan.nodes].reverse().find((n) => n.op === 'gap' || n.op === 'gmp') : undefined;
  if (pool) g.node('Identity', FEATURES_OUTPUT, [g.tensorOf.get(pool.name)!]);

  const dim = (v: number | string) => (typeof v === 'string' ? { dim_param: v } : { dim_value: v });
  const valueInfo = (name: string, dims: (number | string)[]) => ({
    name,
    type: { tensor_type: { elem_type: TensorType.FLOAT, shape: { dim: dims.map(dim) } } },
  });
  const model = {
    ir_version: 8,
    producer_name: 'effitag',
    producer_version: `exporter-${EXPORTER_VERSION}`,
    model_version: 1,
    doc_string: `EfficientNet ${plan.spec.variant}: ${nchw ? 'normalised NCHW pixels (metadata input_scale, input_shift)' : 'raw NHWC [0,255] pixels'} in, ${outputName} out`,
    opset_import: [{ domain: '', version: OPSET }],
    metadata_props: Object.entries({
      variant: plan.spec.variant,
      resolution: String(plan.resolution),
      input_layout: nchw ? 'NCHW' : 'NHWC',
      // The NCHW graph takes normalised pixels: x·input_scale + input_shift per channel (RGB).
      ...(nchw ? { input_scale: a.join(','), input_shift: b.join(',') } : {}),
      ...options.metadata,
    }).map(([key, value]) => ({ key, value })),
    graph: {
      name: `efficientnet_${plan.spec.variant.replace(/[^a-z0-9]/g, '_')}`,
      node: g.nodes,
      initializer: g.initializers.map((t) => ({
        name: t.name,
        data_type: t.type ?? TensorType.FLOAT,
        dims: t.dims.map((d) => d),
        raw_data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      })),
      input: [valueInfo(inputName, nchw ? ['N', 3, plan.resolution, plan.resolution] : ['N', plan.resolution, plan.resolution, 3])],
      output: [
        valueInfo(outputName, ['N', ...(outShape.length === 3 ? [outShape[0], outShape[1], outShape[2]] : [outShape[0]])]),
        ...(pool ? [valueInfo(FEATURES_OUTPUT, ['N', pool.outShape.at(-1)!])] : []),
        // Probes: shapes left to onnxruntime's inference (element type only).
        ...probes.map((name) => ({ name, type: { tensor_type: { elem_type: TensorType.FLOAT } } })),
      ],
    },
  };
  const err = ModelProto.verify(model);
  if (err) throw new Error(`ONNX export produced an invalid model: ${err}`);
  return ModelProto.encode(ModelProto.fromObject(model)).finish();
}

function activation(g: GraphWriter, name: string, x: string, fn: string): string {
  switch (fn) {
    case 'swish':
      return g.node('Mul', name, [x, g.node('Sigmoid', `${name}:sigmoid`, [x])]);
    case 'relu6':
      // Clip's bounds are inputs from opset 11 on. In the int8 graph the Clip's output is what gets quantized (convOutput): onnxruntime then drops the Clip into the QLinearConv's range.
      return g.node('Clip', name, [x, g.init(`${name}/min`, [], Float32Array.of(0)), g.init(`${name}/max`, [], Float32Array.of(6))]);
    case 'sigmoid':
      return g.node('Sigmoid', name, [x]);
    case 'softmax':
      return g.node('Softmax', name, [x], [attrInt('axis', 1)]);
    case 'linear':
      return x;
    default:
      throw new Error(`ONNX export: unsupported activation ${fn}`);
  }
}
