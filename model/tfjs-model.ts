/**
 * Lowers a layer plan to a tfjs LayersModel with Keras layer names and weight shapes.
 */
import { tf } from './tfjs-backend.ts';
import { planModel, type LayerNode, type ModelPlan, type PlanOptions } from './plan.ts';
import type { ArchitectureSpec } from './spec.ts';

type SymbolicTensor = tf.SymbolicTensor;

interface NormalizationArgs {
  name: string;
  constantMean?: number[];
  constantVariance?: number[];
}

/**
 * Keras' `Normalization` layer, which tfjs-layers lacks: (x − mean) / max(sqrt(variance), 1e-7),
 * per channel. V1 stores mean/variance/count as (non-trainable) weights; V2 B0–B3 use constants.
 */
export class Normalization extends tf.layers.Layer {
  static className = 'Normalization';
  private readonly constantMean?: number[];
  private readonly constantVariance?: number[];
  private mean?: tf.LayerVariable;
  private variance?: tf.LayerVariable;

  constructor(args: NormalizationArgs) {
    super({ name: args.name });
    this.constantMean = args.constantMean;
    this.constantVariance = args.constantVariance;
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const c = shape[shape.length - 1] as number;
    if (!this.constantMean) {
      this.mean = this.addWeight('mean', [c], 'float32', tf.initializers.zeros(), undefined, false);
      this.variance = this.addWeight('variance', [c], 'float32', tf.initializers.ones(), undefined, false);
      this.addWeight('count', [], 'float32', tf.initializers.zeros(), undefined, false);
    }
    this.built = true;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const mean = this.mean ? this.mean.read() : tf.tensor1d(this.constantMean!);
      const variance = this.variance ? this.variance.read() : tf.tensor1d(this.constantVariance!);
      return x.sub(mean).div(tf.maximum(tf.sqrt(variance), 1e-7));
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), constantMean: this.constantMean ?? null, constantVariance: this.constantVariance ?? null };
  }
}
tf.serialization.registerClass(Normalization);

/** One plan node → one tfjs layer, named as in Keras. */
function lowerNode(node: LayerNode, inputs: SymbolicTensor[]): SymbolicTensor {
  const [x] = inputs;
  const name = node.name;
  const apply = (layer: tf.layers.Layer, input: SymbolicTensor | SymbolicTensor[] = x) => layer.apply(input) as SymbolicTensor;
  switch (node.op) {
    case 'input':
      throw new Error('input is created by buildTfjsModel');
    case 'rescale':
      return apply(tf.layers.rescaling({ name, scale: node.scale, offset: node.offset }));
    case 'normalize':
      return apply(
        new Normalization({
          name,
          constantMean: node.constant ? [...node.constant.mean] : undefined,
          constantVariance: node.constant ? [...node.constant.variance] : undefined,
        }),
      );
    case 'zeropad':
      return apply(
        tf.layers.zeroPadding2d({ name, padding: [[...node.pad[0]], [...node.pad[1]]] as [[number, number], [number, number]] }),
      );
    case 'conv':
      return apply(
        tf.layers.conv2d({
          name,
          filters: node.filters,
          kernelSize: node.kernel,
          strides: node.stride,
          padding: node.padding,
          useBias: node.useBias,
          activation: node.activation === 'swish' ? 'swish' : node.activation,
          kernelInitializer: 'zeros',
        }),
      );
    case 'dwconv':
      return apply(
        tf.layers.depthwiseConv2d({
          name,
          kernelSize: node.kernel,
          strides: node.stride,
          padding: node.padding,
          useBias: false,
          depthwiseInitializer: 'zeros',
        }),
      );
    case 'bn':
      return apply(tf.layers.batchNormalization({ name, epsilon: node.epsilon, momentum: node.momentum, axis: -1 }));
    case 'activation':
      return apply(tf.layers.activation({ name, activation: node.activation }));
    case 'gap':
      return apply(tf.layers.globalAveragePooling2d({ name }));
    case 'gmp':
      return apply(tf.layers.globalMaxPooling2d({ name }));
    case 'reshape':
      return apply(tf.layers.reshape({ name, targetShape: [...node.target] }));
    case 'multiply':
      return apply(tf.layers.multiply({ name }), inputs);
    case 'add':
      return apply(tf.layers.add({ name }), inputs);
    case 'dropout':
      // noiseShape [batch, 1, 1, 1] (null = the input's size) drops whole branches per image, as Keras does.
      return apply(
        tf.layers.dropout({ name, rate: node.rate, ...(node.perSample ? { noiseShape: [null, 1, 1, 1] as unknown as number[] } : {}) }),
      );
    case 'dense':
      return apply(tf.layers.dense({ name, units: node.units, activation: node.activation, kernelInitializer: 'zeros' }));
  }
}

export interface TfjsModel {
  plan: ModelPlan;
  model: tf.LayersModel;
}

/**
 * Build the tfjs LayersModel of a plan. Weights start at zero (BatchNorm at identity); load real ones
 * with `assignWeights`. Zero init keeps building B7 or V2-L cheap when only the structure is needed.
 */
export function buildTfjsModel(variantOrPlan: string | ArchitectureSpec | ModelPlan, options: PlanOptions = {}): TfjsModel {
  const plan = typeof variantOrPlan === 'object' && 'nodes' in variantOrPlan ? variantOrPlan : planModel(variantOrPlan, options);
  return lowerPlan(plan, plan.nodes[0].name);
}

/**
 * The part of a plan after node `from`, as a model whose input is `from`'s output: the layers a
 * fine-tuning trains, while the frozen part before them runs once per batch outside the gradient
 * tape (recording the whole of B0 at 224 px, batch 16, overflows the wasm backend's 4 GB).
 */
export function buildTfjsModelAfter(plan: ModelPlan, from: string): TfjsModel {
  return lowerPlan(plan, from);
}

function lowerPlan(plan: ModelPlan, start: string): TfjsModel {
  const tensors = new Map<string, SymbolicTensor>();
  const at = plan.nodes.findIndex((n) => n.name === start);
  if (at < 0) throw new Error(`${plan.spec.variant} has no layer ${start}`);
  const first = plan.nodes[at];
  tensors.set(first.name, tf.input({ shape: [...first.outShape], name: at === 0 ? first.name : `${first.name}_in`, dtype: 'float32' }));
  for (const node of plan.nodes.slice(at + 1)) {
    const inputs = node.inputs.map((n) => {
      const t = tensors.get(n);
      if (!t) throw new Error(`${node.name} reads ${n}, which comes before ${start}: the plan cannot be cut there`);
      return t;
    });
    tensors.set(node.name, lowerNode(node, inputs));
  }
  const model = tf.model({
    inputs: tensors.get(start)!,
    outputs: tensors.get(plan.output)!,
    name: `efficientnet-${plan.spec.variant}${at ? `-after-${start}` : ''}`,
  });
  return { plan, model };
}

/**
 * Assign named weights (Keras names → TF-layout arrays) to a built model. Every plan weight must be
 * present with its exact shape; extra names are an error too.
 */
export function assignWeights(built: TfjsModel, weights: ReadonlyMap<string, Float32Array>): void {
  const expected = new Set<string>();
  for (const node of built.plan.nodes) {
    if (node.weights.length === 0) continue;
    const layer = built.model.getLayer(node.name);
    const values = node.weights.map((w) => {
      expected.add(w.name);
      const data = weights.get(w.name);
      if (!data) throw new Error(`missing weight ${w.name} (expected shape [${w.shape.join(', ')}])`);
      const size = w.shape.reduce((a, b) => a * b, 1);
      if (data.length !== size)
        throw new Error(`weight ${w.name} has ${data.length} values, expected shape [${w.shape.join(', ')}] = ${size}`);
      return tf.tensor(data, [...w.shape], 'float32');
    });
    layer.setWeights(values);
    tf.dispose(values);
  }
  const unexpected = [...weights.keys()].filter((k) => !expected.has(k));
  if (unexpected.length)
    throw new Error(
      `unexpected weight${unexpected.length > 1 ? 's' : ''}: ${unexpected.slice(0, 5).join(', ')}${unexpected.length > 5 ? ', …' : ''}`,
    );
}
