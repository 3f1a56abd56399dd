/** Parameter counts and multiply-adds read off a layer plan (no weights allocated). */
import { planWeights, type ModelPlan } from './plan.ts';

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export interface ParamCounts {
  total: number;
  trainable: number;
  nonTrainable: number;
}

export function countParams(plan: ModelPlan): ParamCounts {
  let total = 0,
    trainable = 0;
  for (const w of planWeights(plan)) {
    const n = size(w.shape);
    total += n;
    if (w.trainable) trainable += n;
  }
  return { total, trainable, nonTrainable: total - trainable };
}

/**
 * Multiply-adds of one forward pass at the plan's resolution: convolutions, depthwise convolutions
 * and dense layers (the convention of the EfficientNet papers' FLOPs column). Element-wise work
 * (BatchNorm, activations, SE scaling) is left out.
 */
export function countMacs(plan: ModelPlan): number {
  const shapes = new Map(plan.nodes.map((n) => [n.name, n.outShape]));
  let macs = 0;
  for (const n of plan.nodes) {
    const [h, w] = n.outShape;
    if (n.op === 'conv') {
      const cin = shapes.get(n.inputs[0])!.at(-1)!;
      macs += h * w * n.kernel * n.kernel * cin * n.filters;
    } else if (n.op === 'dwconv') {
      macs += h * w * n.kernel * n.kernel * n.outShape[2];
    } else if (n.op === 'dense') {
      macs += shapes.get(n.inputs[0])!.at(-1)! * n.units;
    }
  }
  return macs;
}
