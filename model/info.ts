/** Summary of a variant for `effitag model info` and tier tooling. */
import { planModel } from './plan.ts';
import { countMacs, countParams } from './stats.ts';
import { decodeVariant, type Family, type VariantArgs } from './spec.ts';

export interface VariantInfo {
  variant: string;
  family: Family;
  origin: 'official' | 'phi' | 'custom';
  phi?: number;
  width: number;
  depth: number;
  resolution: number;
  dropout: number;
  blocksPerStage: number[];
  blocks: number;
  /** Total parameters with the 1000-class top (Keras `count_params`). */
  params: number;
  paramsTrainable: number;
  /** Total parameters without the top. */
  paramsNoTop: number;
  paramsNoTopTrainable: number;
  /** Multiply-adds of one image at `resolution`, with top. */
  macs: number;
}

export function variantInfo(variant: VariantArgs): VariantInfo {
  const spec = decodeVariant(variant);
  const top = planModel(spec);
  const noTop = planModel(spec, { includeTop: false });
  const p = countParams(top),
    q = countParams(noTop);
  return {
    variant: spec.variant,
    family: spec.family,
    origin: spec.origin,
    ...(spec.phi !== undefined ? { phi: spec.phi } : {}),
    width: spec.width,
    depth: spec.depth,
    resolution: spec.resolution,
    dropout: spec.dropout,
    blocksPerStage: [...top.blocksPerStage],
    blocks: top.blocksPerStage.reduce((a, b) => a + b, 0),
    params: p.total,
    paramsTrainable: p.trainable,
    paramsNoTop: q.total,
    paramsNoTopTrainable: q.trainable,
    macs: countMacs(top),
  };
}
