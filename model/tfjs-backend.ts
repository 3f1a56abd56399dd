/**
 * tfjs backend resolution: the first that loads of tfjs-node-gpu → tfjs-node → wasm → cpu.
 *
 * tfjs-node(-gpu) are not in the root install (their install downloads libtensorflow); the GPU image
 * installs tfjs-node-gpu, and this picks it up at run time. `EFFITAG_TFJS_BACKEND` (or an explicit
 * argument) forces one backend, and fails loudly if it cannot load.
 */
import { ENV } from '../base/runtime-names.ts';
import { messageOf } from '../base/errors.ts';
import * as tf from '@tensorflow/tfjs';

export type TfjsBackend = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';
export const BACKEND_ORDER: readonly TfjsBackend[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

const loaders: Record<TfjsBackend, () => Promise<string>> = {
  // Importing tfjs-node(-gpu) registers the native 'tensorflow' backend with the shared tfjs-core.
  'tensorflow-gpu': async () => {
    await import(/* @vite-ignore */ '@tensorflow/tfjs-node-gpu' as string);
    return 'tensorflow';
  },
  tensorflow: async () => {
    await import(/* @vite-ignore */ '@tensorflow/tfjs-node' as string);
    return 'tensorflow';
  },
  wasm: async () => {
    await import('@tensorflow/tfjs-backend-wasm');
    return 'wasm';
  },
  cpu: async () => 'cpu',
};

export interface ResolvedBackend {
  /** Which of the candidates loaded. */
  name: TfjsBackend;
  /** tfjs' own backend name (`tensorflow`, `wasm`, `cpu`). */
  tfjsName: string;
  /** Why earlier candidates were passed over. */
  skipped: { name: TfjsBackend; reason: string }[];
}

let resolved: Promise<ResolvedBackend> | undefined;

function parseBackend(value: string): TfjsBackend {
  const v = value.trim().toLowerCase();
  const alias: Record<string, TfjsBackend> = {
    gpu: 'tensorflow-gpu',
    'tfjs-node-gpu': 'tensorflow-gpu',
    node: 'tensorflow',
    'tfjs-node': 'tensorflow',
  };
  const name = alias[v] ?? v;
  if (!BACKEND_ORDER.includes(name as TfjsBackend)) {
    throw new Error(`unknown tfjs backend "${value}"; choose one of ${BACKEND_ORDER.join(', ')}`);
  }
  return name as TfjsBackend;
}

async function resolve(forced: TfjsBackend | undefined, log: (msg: string) => void): Promise<ResolvedBackend> {
  const candidates = forced ? [forced] : BACKEND_ORDER;
  const skipped: ResolvedBackend['skipped'] = [];
  for (const name of candidates) {
    try {
      const tfjsName = await loaders[name]();
      if (!(await tf.setBackend(tfjsName))) throw new Error(`tf.setBackend('${tfjsName}') returned false`);
      await tf.ready();
      log(`tfjs backend: ${name} (tfjs '${tf.getBackend()}')${skipped.length ? `; skipped ${skipped.map((s) => s.name).join(', ')}` : ''}`);
      return { name, tfjsName, skipped };
    } catch (err) {
      const reason = messageOf(err).split('\n')[0];
      if (forced) throw new Error(`tfjs backend "${name}" was requested but cannot load: ${reason}`);
      skipped.push({ name, reason });
    }
  }
  throw new Error(`no tfjs backend could load: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

/**
 * Resolve (once per process) and activate a tfjs backend. `prefer` or `EFFITAG_TFJS_BACKEND` forces one.
 */
export async function useTfjsBackend(
  prefer?: string,
  log: (msg: string) => void = (m) => process.stderr.write(`${m}\n`),
): Promise<ResolvedBackend> {
  const forcedName = prefer ?? process.env[ENV.tfjsBackend];
  const forced = forcedName ? parseBackend(forcedName) : undefined;
  if (!resolved || forced) {
    const attempt = resolve(forced, log);
    if (!forced) resolved = attempt;
    return attempt;
  }
  return resolved;
}

export { tf };

/**
 * tfjs-node-gpu registers the same 'tensorflow' backend whether or not TensorFlow found a GPU: when
 * the CUDA or cuDNN libraries fail to load it logs "Skipping registering GPU devices" and runs on
 * the CPU, some 50× slower, with nothing failing. The GPU worker calls this at start and exits
 * instead. `backend` is tfjs' active backend instance (`tf.backend()`).
 */
export function assertGpuDevice(backend: unknown): void {
  const b = backend as { isGPUPackage?: boolean; isUsingGpuDevice?: boolean } | undefined;
  if (b?.isUsingGpuDevice === true) return;
  const why =
    b?.isGPUPackage === undefined
      ? 'the active tfjs backend is not TensorFlow (tfjs-node-gpu did not load)'
      : b.isGPUPackage === false
        ? 'the loaded TensorFlow binding is the CPU build (tfjs-node, not tfjs-node-gpu)'
        : 'TensorFlow found no GPU device: check that the task has a GPU (gpuCount), that the host driver is mounted (ECS GPU AMI), and that libcudart.so.11.0 and libcudnn.so.8 load (see the log line "Skipping registering GPU devices")';
  throw new Error(`GPU required but not in use: ${why}. Refusing to run on the CPU.`);
}
