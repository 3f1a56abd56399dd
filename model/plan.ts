/**
 * The one place that turns an `ArchitectureSpec` into layers.
 *
 * The result is a framework-neutral layer graph in Keras order, with Keras layer names, weight names
 * and TF weight layouts (conv HWIO, depthwise k×k×C×1, dense in×out). Two lowerings consume it:
 * `tfjs-model.ts` builds the tfjs LayersModel (GPU engine, weight import) and `onnx/export.ts`
 * writes the ONNX graph (CPU engine). Parameter counts and multiply-adds are read off it without
 * allocating a single weight.
 */
import { IMAGENET_MEAN, IMAGENET_STD, roundFilters, roundRepeats, type ArchitectureSpec, decodeVariant } from './spec.ts';

export type Shape3 = readonly [number, number, number];
export type Activation = 'linear' | 'swish' | 'relu6' | 'sigmoid' | 'softmax';

export interface WeightSpec {
  /** Keras weight name, e.g. `block1a_dwconv/depthwise_kernel:0`. */
  name: string;
  shape: readonly number[];
  trainable: boolean;
}

interface NodeBase {
  name: string;
  inputs: readonly string[];
  /** Output shape without the batch dimension; [C] after pooling/dense. */
  outShape: readonly number[];
  weights: readonly WeightSpec[];
}

export type LayerNode = NodeBase &
  (
    | { op: 'input' }
    | { op: 'rescale'; scale: number; offset: number }
    /** (x − mean) / sqrt(variance); `constant` holds them when they are not stored weights. */
    | { op: 'normalize'; constant?: { mean: readonly number[]; variance: readonly number[] } }
    | { op: 'zeropad'; pad: readonly [readonly [number, number], readonly [number, number]] }
    | { op: 'conv'; filters: number; kernel: number; stride: number; padding: 'same' | 'valid'; useBias: boolean; activation: Activation }
    | { op: 'dwconv'; kernel: number; stride: number; padding: 'same' | 'valid' }
    | { op: 'bn'; epsilon: number; momentum: number }
    | { op: 'activation'; activation: Activation }
    | { op: 'gap' }
    | { op: 'gmp' }
    | { op: 'reshape'; target: readonly number[] }
    | { op: 'multiply' }
    | { op: 'add' }
    /** `perSample`: stochastic depth (Keras noise_shape (None, 1, 1, 1)): a whole residual branch is dropped per image. */
    | { op: 'dropout'; rate: number; perSample?: boolean }
    | { op: 'dense'; units: number; activation: Activation }
  );

export type Pooling = 'avg' | 'max' | 'none';

export interface PlanOptions {
  /** Keep the classifier (`avg_pool`, `top_dropout`, `predictions`). Default true. */
  includeTop?: boolean;
  /** Pooling without top: 'avg' → `avg_pool`, 'max' → `max_pool`, 'none' → feature map. Default 'avg'. */
  pooling?: Pooling;
  /** Classifier width. Default 1000 (ImageNet-1k). */
  classes?: number;
  /** Override the input resolution (static). Default: the variant's native resolution. */
  resolution?: number;
  /** Classifier activation. Default 'softmax'. */
  classifierActivation?: 'softmax' | 'linear';
}

export interface ModelPlan {
  spec: ArchitectureSpec;
  includeTop: boolean;
  pooling: Pooling;
  classes: number;
  resolution: number;
  nodes: readonly LayerNode[];
  output: string;
  /** Blocks per stage after depth scaling. */
  blocksPerStage: readonly number[];
}

const BN_EPSILON = 1e-3;

/** TF 'same' padding for a stride-2 conv on a static size: Keras `correct_pad` (extra at bottom/right). */
export function correctPad(h: number, w: number, kernel: number): [[number, number], [number, number]] {
  const half = Math.floor(kernel / 2);
  return [
    [half - (1 - (h % 2)), half],
    [half - (1 - (w % 2)), half],
  ];
}

/** Output size of a conv along one axis. */
function convOut(size: number, kernel: number, stride: number, padding: 'same' | 'valid'): number {
  return padding === 'same' ? Math.ceil(size / stride) : Math.floor((size - kernel) / stride) + 1;
}

class PlanBuilder {
  readonly nodes: LayerNode[] = [];
  private readonly shapes = new Map<string, readonly number[]>();
  constructor(private readonly bnMomentum: number) {}

  private push(node: LayerNode): string {
    if (this.shapes.has(node.name)) throw new Error(`duplicate layer name ${node.name}`);
    this.nodes.push(node);
    this.shapes.set(node.name, node.outShape);
    return node.name;
  }
  shape(name: string): readonly number[] {
    const s = this.shapes.get(name);
    if (!s) throw new Error(`no layer named ${name}`);
    return s;
  }
  private w(layer: string, weight: string, shape: readonly number[], trainable = true): WeightSpec {
    return { name: `${layer}/${weight}:0`, shape, trainable };
  }

  input(name: string, shape: Shape3): string {
    return this.push({ op: 'input', name, inputs: [], outShape: shape, weights: [] });
  }
  rescale(name: string, x: string, scale: number, offset = 0): string {
    return this.push({ op: 'rescale', name, inputs: [x], outShape: this.shape(x), weights: [], scale, offset });
  }
  normalize(name: string, x: string, constant?: { mean: readonly number[]; variance: readonly number[] }): string {
    const c = this.shape(x).at(-1)!;
    const weights = constant
      ? []
      : [this.w(name, 'mean', [c], false), this.w(name, 'variance', [c], false), this.w(name, 'count', [], false)];
    return this.push({ op: 'normalize', name, inputs: [x], outShape: this.shape(x), weights, constant });
  }
  zeropad(name: string, x: string, kernel: number): string {
    const [h, w, c] = this.shape(x);
    const pad = correctPad(h, w, kernel);
    const outShape = [h + pad[0][0] + pad[0][1], w + pad[1][0] + pad[1][1], c];
    return this.push({ op: 'zeropad', name, inputs: [x], outShape, weights: [], pad });
  }
  conv(
    name: string,
    x: string,
    filters: number,
    kernel: number,
    o: { stride?: number; padding?: 'same' | 'valid'; useBias?: boolean; activation?: Activation } = {},
  ): string {
    const [h, w, cin] = this.shape(x);
    const stride = o.stride ?? 1,
      padding = o.padding ?? 'same',
      useBias = o.useBias ?? false;
    const weights = [this.w(name, 'kernel', [kernel, kernel, cin, filters])];
    if (useBias) weights.push(this.w(name, 'bias', [filters]));
    const outShape = [convOut(h, kernel, stride, padding), convOut(w, kernel, stride, padding), filters];
    return this.push({
      op: 'conv',
      name,
      inputs: [x],
      outShape,
      weights,
      filters,
      kernel,
      stride,
      padding,
      useBias,
      activation: o.activation ?? 'linear',
    });
  }
  dwconv(name: string, x: string, kernel: number, stride: number, padding: 'same' | 'valid'): string {
    const [h, w, c] = this.shape(x);
    const outShape = [convOut(h, kernel, stride, padding), convOut(w, kernel, stride, padding), c];
    return this.push({
      op: 'dwconv',
      name,
      inputs: [x],
      outShape,
      weights: [this.w(name, 'depthwise_kernel', [kernel, kernel, c, 1])],
      kernel,
      stride,
      padding,
    });
  }
  bn(name: string, x: string): string {
    const c = this.shape(x).at(-1)!;
    const weights = [
      this.w(name, 'gamma', [c]),
      this.w(name, 'beta', [c]),
      this.w(name, 'moving_mean', [c], false),
      this.w(name, 'moving_variance', [c], false),
    ];
    return this.push({ op: 'bn', name, inputs: [x], outShape: this.shape(x), weights, epsilon: BN_EPSILON, momentum: this.bnMomentum });
  }
  activation(name: string, x: string, activation: Activation): string {
    return this.push({ op: 'activation', name, inputs: [x], outShape: this.shape(x), weights: [], activation });
  }
  pool(name: string, x: string, kind: 'gap' | 'gmp'): string {
    return this.push({ op: kind, name, inputs: [x], outShape: [this.shape(x).at(-1)!], weights: [] });
  }
  reshape(name: string, x: string, target: readonly number[]): string {
    return this.push({ op: 'reshape', name, inputs: [x], outShape: target, weights: [], target });
  }
  merge(name: string, op: 'multiply' | 'add', a: string, b: string): string {
    return this.push({ op, name, inputs: [a, b], outShape: this.shape(a), weights: [] });
  }
  dropout(name: string, x: string, rate: number, perSample = false): string {
    return this.push({ op: 'dropout', name, inputs: [x], outShape: this.shape(x), weights: [], rate, ...(perSample ? { perSample } : {}) });
  }
  dense(name: string, x: string, units: number, activation: Activation): string {
    const cin = this.shape(x).at(-1)!;
    const weights = [this.w(name, 'kernel', [cin, units]), this.w(name, 'bias', [units])];
    return this.push({ op: 'dense', name, inputs: [x], outShape: [units], weights, units, activation });
  }
}

interface BlockArgs {
  prefix: string;
  filtersIn: number;
  filtersOut: number;
  kernel: number;
  stride: number;
  expandRatio: number;
  seRatio: number;
  fused: boolean;
  dropRate: number;
}

/** MBConv (V1, V2, Lite): expand 1×1 → depthwise k×k → squeeze-excite (not Lite) → project 1×1 → residual. */
function mbconv(b: PlanBuilder, spec: ArchitectureSpec, x: string, a: BlockArgs): string {
  const p = a.prefix;
  const filters = a.filtersIn * a.expandRatio;
  let y = x;
  if (a.expandRatio !== 1) {
    y = b.conv(`${p}expand_conv`, y, filters, 1);
    y = b.bn(`${p}expand_bn`, y);
    y = b.activation(`${p}expand_activation`, y, spec.activation);
  }
  let padding: 'same' | 'valid' = 'same';
  if (a.stride === 2 && spec.explicitStridePadding) {
    y = b.zeropad(`${p}dwconv_pad`, y, a.kernel);
    padding = 'valid';
  }
  y = b.dwconv(`${p}${spec.depthwiseName}`, y, a.kernel, a.stride, padding);
  y = b.bn(`${p}bn`, y);
  y = b.activation(`${p}activation`, y, spec.activation);
  y = squeezeExcite(b, y, a, filters);
  y = b.conv(`${p}project_conv`, y, a.filtersOut, 1);
  y = b.bn(`${p}project_bn`, y);
  return residual(b, x, y, a);
}

/** Fused-MBConv (V2): expand k×k (strided) → project 1×1; with expand 1, a single k×k conv. */
function fusedMbconv(b: PlanBuilder, x: string, a: BlockArgs): string {
  const p = a.prefix;
  const filters = a.filtersIn * a.expandRatio;
  let y = x;
  if (a.expandRatio !== 1) {
    y = b.conv(`${p}expand_conv`, y, filters, a.kernel, { stride: a.stride });
    y = b.bn(`${p}expand_bn`, y);
    y = b.activation(`${p}expand_activation`, y, 'swish');
  }
  y = squeezeExcite(b, y, a, filters);
  const single = a.expandRatio === 1;
  y = b.conv(`${p}project_conv`, y, a.filtersOut, single ? a.kernel : 1, { stride: single ? a.stride : 1 });
  y = b.bn(`${p}project_bn`, y);
  if (single) y = b.activation(`${p}project_activation`, y, 'swish');
  return residual(b, x, y, a);
}

function squeezeExcite(b: PlanBuilder, x: string, a: BlockArgs, filters: number): string {
  if (!(a.seRatio > 0 && a.seRatio <= 1)) return x;
  const p = a.prefix;
  // SE width comes from the block's INPUT filters, not the expanded width.
  const filtersSe = Math.max(1, Math.floor(a.filtersIn * a.seRatio));
  let se = b.pool(`${p}se_squeeze`, x, 'gap');
  se = b.reshape(`${p}se_reshape`, se, [1, 1, filters]);
  se = b.conv(`${p}se_reduce`, se, filtersSe, 1, { useBias: true, activation: 'swish' });
  se = b.conv(`${p}se_expand`, se, filters, 1, { useBias: true, activation: 'sigmoid' });
  return b.merge(`${p}se_excite`, 'multiply', x, se);
}

function residual(b: PlanBuilder, x: string, y: string, a: BlockArgs): string {
  if (a.stride !== 1 || a.filtersIn !== a.filtersOut) return y;
  // Stochastic depth: identity at inference; kept for Keras layer-name fidelity, and for training.
  if (a.dropRate > 0) y = b.dropout(`${a.prefix}drop`, y, a.dropRate, true);
  return b.merge(`${a.prefix}add`, 'add', y, x);
}

const DROP_CONNECT = 0.2;

/** Build the layer plan of a variant (name or spec). */
export function planModel(variant: string | ArchitectureSpec, options: PlanOptions = {}): ModelPlan {
  const spec = typeof variant === 'string' ? decodeVariant(variant) : variant;
  const includeTop = options.includeTop ?? true;
  const pooling = options.pooling ?? 'avg';
  const classes = options.classes ?? 1000;
  const resolution = options.resolution ?? spec.resolution;
  if (!Number.isInteger(classes) || classes < 1) throw new Error(`classes must be a positive integer, got ${classes}`);
  if (!Number.isInteger(resolution) || resolution < 32) throw new Error(`resolution must be an integer ≥ 32, got ${resolution}`);

  const b = new PlanBuilder(spec.bnMomentum);
  const filters = (f: number) => roundFilters(f, spec.width, spec.roundFiltersBump);
  let x = b.input('input_1', [resolution, resolution, 3]);

  // Preprocessing inside the model, exactly where Keras puts it: raw [0,255] pixels go in.
  if (spec.preprocessing === 'tf') {
    x = b.rescale('rescaling', x, 1 / 128, -1);
  } else if (spec.preprocessing === 'lite') {
    x = b.rescale('rescaling', x, 1 / 128, -127 / 128);
  } else {
    x = b.rescale('rescaling', x, 1 / 255);
    x =
      spec.preprocessing === 'imagenet-stored'
        ? b.normalize('normalization', x)
        : b.normalize('normalization', x, { mean: IMAGENET_MEAN, variance: IMAGENET_STD.map((s) => s * s) });
  }

  // Stem (Lite: 32 filters whatever the width).
  const stemFilters = spec.fixedStemHead ? spec.stages[0].filtersIn : filters(spec.stages[0].filtersIn);
  if (spec.explicitStridePadding) {
    x = b.zeropad('stem_conv_pad', x, 3);
    x = b.conv('stem_conv', x, stemFilters, 3, { stride: 2, padding: 'valid' });
  } else {
    x = b.conv('stem_conv', x, stemFilters, 3, { stride: 2 });
  }
  x = b.bn('stem_bn', x);
  x = b.activation('stem_activation', x, spec.activation);

  // Blocks. Keras V1 divides the drop-connect schedule by the rounded block count, V2 by the unrounded one.
  // Lite keeps the first and last stages' repeats (the Lite builder's fix_head_stem, timm's fix_first_last).
  const last = spec.stages.length - 1;
  const blocksPerStage = spec.stages.map((s, i) =>
    spec.fixedStemHead && (i === 0 || i === last) ? s.repeats : roundRepeats(s.repeats, spec.depth),
  );
  const total = spec.family !== 'v2' ? blocksPerStage.reduce((s, n) => s + n, 0) : spec.stages.reduce((s, st) => s + st.repeats, 0);
  let blockIndex = 0;
  spec.stages.forEach((stage, i) => {
    // The first stage reads the stem (Lite's fixed 32 filters, not the width-scaled 32 of its table row).
    let filtersIn = i === 0 ? stemFilters : filters(stage.filtersIn);
    const filtersOut = filters(stage.filtersOut);
    for (let j = 0; j < blocksPerStage[i]; j++) {
      const args: BlockArgs = {
        prefix: `block${i + 1}${String.fromCharCode(97 + j)}_`,
        filtersIn,
        filtersOut,
        kernel: stage.kernel,
        stride: j === 0 ? stage.stride : 1,
        expandRatio: stage.expandRatio,
        seRatio: stage.seRatio,
        fused: stage.fused,
        dropRate: (DROP_CONNECT * blockIndex) / total,
      };
      x = stage.fused ? fusedMbconv(b, x, args) : mbconv(b, spec, x, args);
      filtersIn = filtersOut;
      blockIndex++;
    }
  });

  // Head (Lite: 1280 filters whatever the width).
  x = b.conv('top_conv', x, spec.fixedStemHead ? 1280 : filters(1280), 1);
  x = b.bn('top_bn', x);
  x = b.activation('top_activation', x, spec.activation);
  if (includeTop) {
    x = b.pool('avg_pool', x, 'gap');
    if (spec.dropout > 0) x = b.dropout('top_dropout', x, spec.dropout);
    x = b.dense('predictions', x, classes, options.classifierActivation ?? 'softmax');
  } else if (pooling === 'avg') {
    x = b.pool('avg_pool', x, 'gap');
  } else if (pooling === 'max') {
    x = b.pool('max_pool', x, 'gmp');
  }
  return {
    spec,
    includeTop,
    pooling: includeTop ? 'avg' : pooling,
    classes: includeTop ? classes : 0,
    resolution,
    nodes: b.nodes,
    output: x,
    blocksPerStage,
  };
}

/** Every weight of the plan, in graph order. */
export function planWeights(plan: ModelPlan): WeightSpec[] {
  return plan.nodes.flatMap((n) => n.weights);
}
