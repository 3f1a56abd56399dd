/**
 * EfficientNet architectures as data.
 *
 * Like Keras' `efficientnet.py`, one table of block arguments per family plus two rounding
 * functions drive every variant: B0–B7 are the V1 baseline scaled by (width, depth, resolution),
 * V2 B0–B3 scale the V2 baseline, and V2 S/M/L have tables of their own. EfficientNet-Lite0–4 are
 * the V1 table without squeeze-and-excite, with ReLU6 for swish and a fixed stem and head (the
 * integer-friendly variants: tensorflow/tpu `efficientnet_lite_builder.py`, timm `_gen_efficientnet_lite`). `decodeVariant` turns a
 * variant name (or a custom compound coefficient φ / explicit w,d,r) into a fully resolved
 * `ArchitectureSpec`; `plan.ts` is the one place that turns that spec into layers.
 */

export type Family = 'v1' | 'v2' | 'lite';

/** One row of a block table: a stage of identical blocks (before depth scaling). */
export interface StageArgs {
  kernel: number;
  repeats: number;
  filtersIn: number;
  filtersOut: number;
  expandRatio: number;
  stride: 1 | 2;
  seRatio: number;
  /** Fused-MBConv (V2): the expansion is a k×k conv and there is no depthwise conv. */
  fused: boolean;
}

/** V1 baseline (B0) block table: Tan & Le 2019, table 1; Keras DEFAULT_BLOCKS_ARGS. */
export const V1_STAGES: readonly StageArgs[] = [
  { kernel: 3, repeats: 1, filtersIn: 32, filtersOut: 16, expandRatio: 1, stride: 1, seRatio: 0.25, fused: false },
  { kernel: 3, repeats: 2, filtersIn: 16, filtersOut: 24, expandRatio: 6, stride: 2, seRatio: 0.25, fused: false },
  { kernel: 5, repeats: 2, filtersIn: 24, filtersOut: 40, expandRatio: 6, stride: 2, seRatio: 0.25, fused: false },
  { kernel: 3, repeats: 3, filtersIn: 40, filtersOut: 80, expandRatio: 6, stride: 2, seRatio: 0.25, fused: false },
  { kernel: 5, repeats: 3, filtersIn: 80, filtersOut: 112, expandRatio: 6, stride: 1, seRatio: 0.25, fused: false },
  { kernel: 5, repeats: 4, filtersIn: 112, filtersOut: 192, expandRatio: 6, stride: 2, seRatio: 0.25, fused: false },
  { kernel: 3, repeats: 1, filtersIn: 192, filtersOut: 320, expandRatio: 6, stride: 1, seRatio: 0.25, fused: false },
];

/**
 * EfficientNet-Lite's table: the V1 rows without squeeze-and-excite (derived, not copied: Lite is B0's
 * network with three changes, and the other two are `activation` and `fixedStemHead` on the spec).
 */
export const LITE_STAGES: readonly StageArgs[] = V1_STAGES.map((s) => ({ ...s, seRatio: 0 }));

/** V2 block tables (Keras efficientnet_v2.py DEFAULT_BLOCKS_ARGS); kernel is always 3. */
export const V2_STAGES: Readonly<Record<'b' | 's' | 'm' | 'l', readonly StageArgs[]>> = {
  b: [
    { kernel: 3, repeats: 1, filtersIn: 32, filtersOut: 16, expandRatio: 1, stride: 1, seRatio: 0, fused: true },
    { kernel: 3, repeats: 2, filtersIn: 16, filtersOut: 32, expandRatio: 4, stride: 2, seRatio: 0, fused: true },
    { kernel: 3, repeats: 2, filtersIn: 32, filtersOut: 48, expandRatio: 4, stride: 2, seRatio: 0, fused: true },
    { kernel: 3, repeats: 3, filtersIn: 48, filtersOut: 96, expandRatio: 4, stride: 2, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 5, filtersIn: 96, filtersOut: 112, expandRatio: 6, stride: 1, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 8, filtersIn: 112, filtersOut: 192, expandRatio: 6, stride: 2, seRatio: 0.25, fused: false },
  ],
  s: [
    { kernel: 3, repeats: 2, filtersIn: 24, filtersOut: 24, expandRatio: 1, stride: 1, seRatio: 0, fused: true },
    { kernel: 3, repeats: 4, filtersIn: 24, filtersOut: 48, expandRatio: 4, stride: 2, seRatio: 0, fused: true },
    { kernel: 3, repeats: 4, filtersIn: 48, filtersOut: 64, expandRatio: 4, stride: 2, seRatio: 0, fused: true },
    { kernel: 3, repeats: 6, filtersIn: 64, filtersOut: 128, expandRatio: 4, stride: 2, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 9, filtersIn: 128, filtersOut: 160, expandRatio: 6, stride: 1, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 15, filtersIn: 160, filtersOut: 256, expandRatio: 6, stride: 2, seRatio: 0.25, fused: false },
  ],
  m: [
    { kernel: 3, repeats: 3, filtersIn: 24, filtersOut: 24, expandRatio: 1, stride: 1, seRatio: 0, fused: true },
    { kernel: 3, repeats: 5, filtersIn: 24, filtersOut: 48, expandRatio: 4, stride: 2, seRatio: 0, fused: true },
    { kernel: 3, repeats: 5, filtersIn: 48, filtersOut: 80, expandRatio: 4, stride: 2, seRatio: 0, fused: true },
    { kernel: 3, repeats: 7, filtersIn: 80, filtersOut: 160, expandRatio: 4, stride: 2, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 14, filtersIn: 160, filtersOut: 176, expandRatio: 6, stride: 1, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 18, filtersIn: 176, filtersOut: 304, expandRatio: 6, stride: 2, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 5, filtersIn: 304, filtersOut: 512, expandRatio: 6, stride: 1, seRatio: 0.25, fused: false },
  ],
  l: [
    { kernel: 3, repeats: 4, filtersIn: 32, filtersOut: 32, expandRatio: 1, stride: 1, seRatio: 0, fused: true },
    { kernel: 3, repeats: 7, filtersIn: 32, filtersOut: 64, expandRatio: 4, stride: 2, seRatio: 0, fused: true },
    { kernel: 3, repeats: 7, filtersIn: 64, filtersOut: 96, expandRatio: 4, stride: 2, seRatio: 0, fused: true },
    { kernel: 3, repeats: 10, filtersIn: 96, filtersOut: 192, expandRatio: 4, stride: 2, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 19, filtersIn: 192, filtersOut: 224, expandRatio: 6, stride: 1, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 25, filtersIn: 224, filtersOut: 384, expandRatio: 6, stride: 2, seRatio: 0.25, fused: false },
    { kernel: 3, repeats: 7, filtersIn: 384, filtersOut: 640, expandRatio: 6, stride: 1, seRatio: 0.25, fused: false },
  ],
};

/** How raw [0,255] pixels are normalised inside the model (as Keras does it). */
export type Preprocessing =
  /** V1: Rescaling(1/255) then a Normalization layer whose mean/variance are stored weights. */
  | 'imagenet-stored'
  /** V2 B0–B3: Rescaling(1/255) then Normalization with constant ImageNet mean/variance (no weights). */
  | 'imagenet-constant'
  /** V2 S/M/L: Rescaling(scale 1/128, offset −1). */
  | 'tf'
  /** Lite: (x − 127) / 128, the official Lite builder's MEAN_RGB 127 and STDDEV_RGB 128 (timm's port says 0.5/0.5 on [0, 1]). */
  | 'lite';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

export interface Coefficients {
  width: number;
  depth: number;
  resolution: number;
  dropout: number;
}

export interface ArchitectureSpec extends Coefficients {
  /** Canonical variant name: `b0`, `v2-s`, `phi-1.5`, `custom-w1.1-d1.2-r256`. */
  variant: string;
  family: Family;
  stages: readonly StageArgs[];
  preprocessing: Preprocessing;
  /** V1 adds 8 when rounding loses more than 10 %; V2 does not. */
  roundFiltersBump: boolean;
  /** V1 pads stride-2 convs explicitly (ZeroPadding2D + 'valid'), V2 uses 'same'. */
  explicitStridePadding: boolean;
  /** Keras names the V2 depthwise conv `dwconv2`. */
  depthwiseName: 'dwconv' | 'dwconv2';
  /** The blocks' (and stem's and head's) activation: swish, or ReLU6 (Lite: free in int8, the clip is the quantized range). */
  activation: 'swish' | 'relu6';
  /**
   * Lite: the stem stays 32 filters and the head 1280 whatever the width, and the first and last
   * stages keep their repeats whatever the depth (the Lite builder's `fix_head_stem`).
   */
  fixedStemHead: boolean;
  bnMomentum: number;
  /** Where the variant comes from: an official table row or a compound coefficient. */
  origin: 'official' | 'phi' | 'custom';
  phi?: number;
}

const DIVISOR = 8;

/**
 * Keras `round_filters`: scale by width, round to the nearest multiple of 8 (at least 8), and for V1
 * add 8 more when rounding down lost over 10 % of the scaled width.
 */
export function roundFilters(filters: number, width: number, bump: boolean): number {
  const scaled = filters * width;
  let rounded = Math.max(DIVISOR, Math.floor((scaled + DIVISOR / 2) / DIVISOR) * DIVISOR);
  if (bump && rounded < 0.9 * scaled) rounded += DIVISOR;
  return rounded;
}

/** Keras `round_repeats`: ceil(depth · repeats). */
export function roundRepeats(repeats: number, depth: number): number {
  return Math.ceil(depth * repeats);
}

/** Official V1 coefficients (Keras applications), in the order B0..B7. */
const V1_OFFICIAL: Readonly<Record<string, Coefficients>> = {
  b0: { width: 1.0, depth: 1.0, resolution: 224, dropout: 0.2 },
  b1: { width: 1.0, depth: 1.1, resolution: 240, dropout: 0.2 },
  b2: { width: 1.1, depth: 1.2, resolution: 260, dropout: 0.3 },
  b3: { width: 1.2, depth: 1.4, resolution: 300, dropout: 0.3 },
  b4: { width: 1.4, depth: 1.8, resolution: 380, dropout: 0.4 },
  b5: { width: 1.6, depth: 2.2, resolution: 456, dropout: 0.4 },
  b6: { width: 1.8, depth: 2.6, resolution: 528, dropout: 0.5 },
  b7: { width: 2.0, depth: 3.1, resolution: 600, dropout: 0.5 },
};

/** Official V2 coefficients; Keras' V2 constructors keep the default dropout 0.2 for all. */
const V2_OFFICIAL: Readonly<Record<string, Coefficients & { table: 'b' | 's' | 'm' | 'l' }>> = {
  'v2-b0': { width: 1.0, depth: 1.0, resolution: 224, dropout: 0.2, table: 'b' },
  'v2-b1': { width: 1.0, depth: 1.1, resolution: 240, dropout: 0.2, table: 'b' },
  'v2-b2': { width: 1.1, depth: 1.2, resolution: 260, dropout: 0.2, table: 'b' },
  'v2-b3': { width: 1.2, depth: 1.4, resolution: 300, dropout: 0.2, table: 'b' },
  'v2-s': { width: 1.0, depth: 1.0, resolution: 384, dropout: 0.2, table: 's' },
  'v2-m': { width: 1.0, depth: 1.0, resolution: 480, dropout: 0.2, table: 'm' },
  'v2-l': { width: 1.0, depth: 1.0, resolution: 480, dropout: 0.2, table: 'l' },
};

/**
 * Official Lite coefficients (tensorflow/tpu efficientnet_lite_builder.py `efficientnet_lite_params`;
 * the same in timm). Lite3 and Lite4 run at 280 and 300, not B3's and B4's 300 and 380.
 */
const LITE_OFFICIAL: Readonly<Record<string, Coefficients>> = {
  lite0: { width: 1.0, depth: 1.0, resolution: 224, dropout: 0.2 },
  lite1: { width: 1.0, depth: 1.1, resolution: 240, dropout: 0.2 },
  lite2: { width: 1.1, depth: 1.2, resolution: 260, dropout: 0.3 },
  lite3: { width: 1.2, depth: 1.4, resolution: 280, dropout: 0.3 },
  lite4: { width: 1.4, depth: 1.8, resolution: 300, dropout: 0.3 },
};

/** The Keras applications' variants (V1 B0–B7, V2): the ones `weights fetch` knows official .h5 files for. */
export const OFFICIAL_VARIANTS: readonly string[] = [...Object.keys(V1_OFFICIAL), ...Object.keys(V2_OFFICIAL)];

/** EfficientNet-Lite0–4 (no Keras application: their weights come in timm's layout, `weights import --layout timm-safetensors`). */
export const LITE_VARIANTS: readonly string[] = Object.keys(LITE_OFFICIAL);

/** Every named variant of the library. */
export const LIBRARY_VARIANTS: readonly string[] = [...OFFICIAL_VARIANTS, ...LITE_VARIANTS];

/** Grid-searched compound scaling bases (V1 paper, eq. 3): α depth, β width, γ resolution. */
export const COMPOUND = { alpha: 1.2, beta: 1.1, gamma: 1.15, baseResolution: 224 } as const;

/**
 * Coefficients for a compound coefficient φ: d = 1.2^φ, w = 1.1^φ, r = 224·1.15^φ.
 * Rounding: w and d are kept to 4 decimals (they only feed round_filters/round_repeats);
 * r is rounded to the nearest integer pixel (φ = 1 → 258, as the reference notes).
 * Dropout follows the official ladder: 0.2 + 0.05·φ, clamped to [0.2, 0.5] (inference ignores it).
 */
export function compoundCoefficients(phi: number): Coefficients {
  if (!Number.isFinite(phi) || phi < 0 || phi > 10) {
    throw new Error(`compound coefficient φ must be a number in [0, 10], got ${phi}`);
  }
  const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
  return {
    width: r4(COMPOUND.beta ** phi),
    depth: r4(COMPOUND.alpha ** phi),
    resolution: Math.round(COMPOUND.baseResolution * COMPOUND.gamma ** phi),
    dropout: Math.min(0.5, Math.max(0.2, r4(0.2 + 0.05 * phi))),
  };
}

function v1Spec(variant: string, c: Coefficients, origin: ArchitectureSpec['origin'], phi?: number): ArchitectureSpec {
  return {
    variant,
    family: 'v1',
    ...c,
    stages: V1_STAGES,
    preprocessing: 'imagenet-stored',
    roundFiltersBump: true,
    explicitStridePadding: true,
    depthwiseName: 'dwconv',
    activation: 'swish',
    fixedStemHead: false,
    bnMomentum: 0.99,
    origin,
    phi,
  };
}

function liteSpec(variant: string, c: Coefficients): ArchitectureSpec {
  return {
    ...v1Spec(variant, c, 'official'),
    family: 'lite',
    stages: LITE_STAGES,
    preprocessing: 'lite',
    activation: 'relu6',
    fixedStemHead: true,
  };
}

const fmt = (x: number) => String(Number(x.toFixed(4)));

/**
 * A variant as callers hold it: a name, or the structured form a tiers file may use (a compound
 * coefficient, or explicit width/depth/resolution). Structured values are decoded as they are, never
 * re-encoded into a name to be parsed back.
 */
export type VariantArgs = string | { phi: number } | { width: number; depth: number; resolution: number };

/**
 * Resolve a variant to its architecture: the one place names and coefficients become specs.
 * Names accepted: `b0`…`b7`, `v2-b0`…`v2-b3`, `v2-s`, `v2-m`, `v2-l`, `lite0`…`lite4` (case-insensitive,
 * `efficientnet-` prefix allowed), `phi-X` (V1 baseline at compound coefficient X), and
 * `custom-wW-dD-rR` (V1 baseline at explicit width, depth, resolution).
 */
export function decodeVariant(variant: VariantArgs): ArchitectureSpec {
  if (typeof variant !== 'string') {
    return 'phi' in variant ? phiSpec(variant.phi) : customVariant(variant.width, variant.depth, variant.resolution);
  }
  const name = variant;
  const key = name
    .trim()
    .toLowerCase()
    .replace(/^efficientnet[-_]?/, '')
    .replace(/^v2([bsml])/, 'v2-$1');
  const v1 = V1_OFFICIAL[key];
  if (v1) return v1Spec(key, v1, 'official');
  const lite = LITE_OFFICIAL[key];
  if (lite) return liteSpec(key, lite);
  const v2 = V2_OFFICIAL[key];
  if (v2) {
    const { table, ...c } = v2;
    return {
      variant: key,
      family: 'v2',
      ...c,
      stages: V2_STAGES[table],
      preprocessing: table === 'b' ? 'imagenet-constant' : 'tf',
      roundFiltersBump: false,
      explicitStridePadding: false,
      depthwiseName: 'dwconv2',
      activation: 'swish',
      fixedStemHead: false,
      bnMomentum: 0.9,
      origin: 'official',
    };
  }
  const phi = /^phi-?(\d+(?:\.\d+)?)$/.exec(key);
  if (phi) return phiSpec(Number(phi[1]));
  const custom = /^custom-w(\d+(?:\.\d+)?)-d(\d+(?:\.\d+)?)-r(\d+)$/.exec(key);
  if (custom) return customVariant(Number(custom[1]), Number(custom[2]), Number(custom[3]));
  throw new Error(`unknown variant "${name}"; known: ${LIBRARY_VARIANTS.join(', ')}, phi-X (compound coefficient), custom-wW-dD-rR`);
}

/** The V1 baseline scaled by compound coefficient φ. */
function phiSpec(phi: number): ArchitectureSpec {
  return v1Spec(`phi-${fmt(phi)}`, compoundCoefficients(phi), 'phi', phi);
}

/** A V1-baseline variant at explicit (width, depth, resolution). */
export function customVariant(width: number, depth: number, resolution: number): ArchitectureSpec {
  if (!(width > 0 && width <= 8)) throw new Error(`width must be in (0, 8], got ${width}`);
  if (!(depth > 0 && depth <= 8)) throw new Error(`depth must be in (0, 8], got ${depth}`);
  if (!Number.isInteger(resolution) || resolution < 32 || resolution > 1024) {
    throw new Error(`resolution must be an integer in [32, 1024], got ${resolution}`);
  }
  return v1Spec(`custom-w${fmt(width)}-d${fmt(depth)}-r${resolution}`, { width, depth, resolution, dropout: 0.2 }, 'custom');
}

/** Variant name for a compound coefficient φ, e.g. `phi-1.5`. */
export const phiVariant = (phi: number): string => decodeVariant({ phi }).variant;

/** Is a model an ImageNet classifier: a variant, or a variant's int8 model? */
export const isImagenetModel = (name: string): boolean => isVariantName(int8Base(name) ?? name);

/** Names `effitag train --name` may not take: a variant's, or an int8 model's (NAME-int8 is NAME's int8 model). */
export const isReservedModelName = (name: string): boolean => isVariantName(name) || int8Base(name) !== undefined;

/** The int8 model of a float model NAME (`effitag weights quantize`) is NAME-int8. */
export const INT8_SUFFIX = '-int8';

/** The float model an int8 model's name comes from (`phi-1-int8` → `phi-1`), or undefined for other names. */
export function int8Base(name: string): string | undefined {
  return name.toLowerCase().endsWith(INT8_SUFFIX) ? name.slice(0, -INT8_SUFFIX.length) : undefined;
}

/**
 * Does a name denote a variant (or look like one)? Custom models (`effitag train --name`) share the
 * catalog and the markers with variants, so their names must never be mistaken for one. An int8
 * model's name (`b0-int8`, `phi-1-int8`, `custom-w1-d1-r224-int8`) is not a variant: it names that
 * variant's int8 model (int8Base), never another variant.
 */
export function isVariantName(name: string): boolean {
  if (int8Base(name) !== undefined) return false;
  if (/^(efficientnet|phi-|custom-)/i.test(name)) return true;
  try {
    decodeVariant(name);
    return true;
  } catch {
    return false;
  }
}
