/**
 * Reads legacy Keras weight files (.h5, as published for keras.applications) with h5wasm.
 *
 * Layout: the root (or `model_weights/` in a full-model save) carries the attribute `layer_names`
 * (split into `layer_names0`, `layer_names1`, … when it outgrows HDF5's 64 KB attribute limit);
 * each layer group carries `weight_names`, and each weight is the dataset `<layer>/<weight name>`.
 * Weights are matched by these names, never by order.
 */
import { messageOf } from '../base/errors.ts';
import { open } from 'node:fs/promises';
import h5wasm from 'h5wasm/node';

export interface KerasWeight {
  /** Keras weight name as listed in `weight_names`, e.g. `stem_conv/kernel:0`. */
  name: string;
  layer: string;
  shape: number[];
  data: Float32Array;
}

export interface KerasWeightFile {
  layerNames: string[];
  weights: Map<string, KerasWeight>;
  kerasVersion?: string;
  backend?: string;
}

type H5Group = InstanceType<typeof h5wasm.Group>;
type H5Object = { attrs: Record<string, { value: unknown }> };

function asStrings(value: unknown): string[] {
  const one = (v: unknown): string => {
    if (typeof v === 'string') return v;
    if (v instanceof Uint8Array) return new TextDecoder().decode(v).replace(/\0+$/, '');
    return String(v);
  };
  if (Array.isArray(value)) return value.map(one);
  if (value == null) return [];
  return [one(value)];
}

/** Read a string-list attribute, joining Keras' split form `name0`, `name1`, … when present. */
export function readStringList(obj: H5Object, name: string): string[] | undefined {
  const attrs = obj.attrs;
  if (name in attrs) return asStrings(attrs[name].value);
  if (!(`${name}0` in attrs)) return undefined;
  const out: string[] = [];
  for (let i = 0; `${name}${i}` in attrs; i++) out.push(...asStrings(attrs[`${name}${i}`].value));
  return out;
}

function toFloat32(value: unknown, where: string): Float32Array {
  if (value instanceof Float32Array) return value;
  if (value instanceof Float64Array || value instanceof Int32Array || value instanceof Uint8Array || value instanceof Int16Array)
    return Float32Array.from(value);
  if (value instanceof BigInt64Array || value instanceof BigUint64Array) return Float32Array.from(value, (v) => Number(v));
  if (typeof value === 'number') return Float32Array.of(value);
  if (typeof value === 'bigint') return Float32Array.of(Number(value));
  throw new Error(`${where}: unsupported dataset value type ${Object.prototype.toString.call(value)}`);
}

let ready: Promise<unknown> | undefined;
export async function h5() {
  ready ??= h5wasm.ready;
  await ready;
  return h5wasm;
}

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** HDF5 files start with an 8-byte signature at offset 0, 512, 1024, 2048, … (after a user block). */
async function isHdf5(path: string): Promise<boolean> {
  const handle = await open(path, 'r');
  try {
    const head = Buffer.alloc(8);
    for (let offset = 0; offset <= 8192; offset = offset === 0 ? 512 : offset * 2) {
      const { bytesRead } = await handle.read(head, 0, 8, offset);
      if (bytesRead < 8) return false;
      if (head.equals(HDF5_SIGNATURE)) return true;
    }
    return false;
  } finally {
    await handle.close();
  }
}

/** Read every weight of a Keras .h5 weight file into memory (float32). */
export async function readKerasWeights(path: string): Promise<KerasWeightFile> {
  if (!(await isHdf5(path))) throw new Error(`${path}: not a readable HDF5 file (no HDF5 signature)`);
  const lib = await h5();
  let file: InstanceType<typeof lib.File>;
  try {
    file = new lib.File(path, 'r');
  } catch (err) {
    throw new Error(`${path}: not a readable HDF5 file (${messageOf(err)})`);
  }
  try {
    const root = (file.get('model_weights') as H5Group | null) ?? file;
    const layerNames = readStringList(root as unknown as H5Object, 'layer_names');
    if (!layerNames) throw new Error(`${path}: no 'layer_names' attribute — not a Keras weight file`);
    const weights = new Map<string, KerasWeight>();
    for (const layer of layerNames) {
      const group = root.get(layer) as H5Group | null;
      if (!group) throw new Error(`${path}: layer '${layer}' is listed in layer_names but has no group`);
      for (const name of readStringList(group as unknown as H5Object, 'weight_names') ?? []) {
        const dataset = group.get(name) as InstanceType<typeof lib.Dataset> | null;
        if (!dataset || !('shape' in dataset)) throw new Error(`${path}: weight '${name}' of layer '${layer}' has no dataset`);
        if (weights.has(name)) throw new Error(`${path}: weight '${name}' appears twice`);
        weights.set(name, { name, layer, shape: dataset.shape ?? [], data: toFloat32(dataset.value, name) });
      }
    }
    const attrs = (root as unknown as H5Object).attrs;
    return {
      layerNames,
      weights,
      kerasVersion: 'keras_version' in attrs ? asStrings(attrs.keras_version.value)[0] : undefined,
      backend: 'backend' in attrs ? asStrings(attrs.backend.value)[0] : undefined,
    };
  } finally {
    file.close();
  }
}
