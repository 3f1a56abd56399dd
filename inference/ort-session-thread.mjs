// Hosts one onnxruntime InferenceSession on a worker thread. onnxruntime-node runs a session
// synchronously on the calling thread, so running it here keeps the main event loop free for
// downloads, decoding and queue calls while the engine works. Plain JavaScript on purpose: the
// thread needs no TypeScript loader, and deployments ship it beside their bundle.
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';

// require(), not import: on Lambda, onnxruntime-node comes from a layer (/opt/nodejs/node_modules),
// which CommonJS resolution finds through NODE_PATH and ES module resolution does not.
const ort = createRequire(import.meta.url)('onnxruntime-node');

let session;
try {
  session = await ort.InferenceSession.create(workerData.path, workerData.options);
  parentPort.postMessage({ type: 'ready', inputNames: session.inputNames, outputNames: session.outputNames });
} catch (err) {
  parentPort.postMessage({ type: 'failed', error: err instanceof Error ? err.message : String(err) });
}

parentPort.on('message', async (msg) => {
  if (msg.type === 'close') {
    await session?.release();
    parentPort.close();
    return;
  }
  try {
    const input = new ort.Tensor('float32', new Float32Array(msg.buffer), msg.dims);
    const out = await session.run({ [session.inputNames[0]]: input });
    // Every output, in the graph's order (a classifier's probabilities, then its pooled features).
    const outputs = session.outputNames.map((name) => {
      const data = Float32Array.from(out[name].data);
      return { buffer: data.buffer, dims: out[name].dims };
    });
    parentPort.postMessage(
      { type: 'result', id: msg.id, outputs },
      outputs.map((o) => o.buffer),
    );
  } catch (err) {
    parentPort.postMessage({ type: 'result', id: msg.id, error: err instanceof Error ? err.message : String(err) });
  }
});
