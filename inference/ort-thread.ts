/** Client side of inference/ort-session-thread.mjs: one session on one worker thread. */
import { ENV } from '../base/runtime-names.ts';
import { Worker } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';

export interface SessionOutput {
  data: Float32Array;
  dims: readonly number[];
}

export interface SessionThread {
  /**
   * Run one batch: the first output (`data`, `dims`) and every output in the graph's order (`outputs`).
   * `data`'s buffer is transferred to the thread (no copy): the caller must not use it afterwards.
   */
  run(data: Float32Array, dims: readonly number[]): Promise<SessionOutput & { outputs: SessionOutput[] }>;
  close(): Promise<void>;
}

/** Where the thread script is: beside this module, or EFFITAG_ORT_THREAD_SCRIPT in bundled deployments. */
export function threadScriptUrl(): URL {
  const override = process.env[ENV.ortThreadScript];
  return override ? new URL(`file://${override}`) : new URL('./ort-session-thread.mjs', import.meta.url);
}

export function startSessionThread(path: string, options: ort.InferenceSession.SessionOptions): Promise<SessionThread> {
  // No loader flags for the thread: it is plain JavaScript.
  const worker = new Worker(threadScriptUrl(), { workerData: { path, options }, execArgv: [] });
  const pending = new Map<number, { resolve: (v: SessionOutput & { outputs: SessionOutput[] }) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  return new Promise((resolveStart, rejectStart) => {
    const fail = (err: Error) => {
      rejectStart(err);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (pending.size) fail(new Error(`onnxruntime thread exited (${code})`));
    });
    worker.on('message', (msg: { type: string; id?: number; outputs?: { buffer: ArrayBuffer; dims: number[] }[]; error?: string }) => {
      if (msg.type === 'failed') {
        void worker.terminate();
        fail(new Error(msg.error));
        return;
      }
      if (msg.type === 'ready') {
        resolveStart({
          run(data, dims) {
            return new Promise((resolve, reject) => {
              const id = nextId++;
              pending.set(id, { resolve, reject });
              // A view of part of a larger (or shared) buffer cannot be handed over whole: copy that part.
              const whole = data.buffer instanceof ArrayBuffer && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
              const buffer = (whole ? data : data.slice()).buffer as ArrayBuffer;
              worker.postMessage({ type: 'run', id, buffer, dims }, [buffer]);
            });
          },
          async close() {
            worker.postMessage({ type: 'close' });
            await new Promise((r) => worker.once('exit', r));
          },
        });
        return;
      }
      const p = pending.get(msg.id!);
      if (!p) return;
      pending.delete(msg.id!);
      if (msg.error) p.reject(new Error(msg.error));
      else {
        const outputs = msg.outputs!.map((o) => ({ data: new Float32Array(o.buffer), dims: o.dims }));
        p.resolve({ ...outputs[0], outputs });
      }
    });
  });
}
