/**
 * EfficientNet-Lite0 against PyTorch: test/support/torch-lite.py builds Lite0 from torchvision's
 * classes (an implementation independent of EffiTag's), makes it TF-compatible as timm's tf_ ports
 * are, computes logits for three random inputs, and writes its weights under timm's
 * tf_efficientnet_lite0 names as safetensors. EffiTag imports that file (`weights import --timm`),
 * exports its ONNX graph and must compute the same probabilities: the layout conversions (conv,
 * depthwise, classifier, BatchNorm), TF 'same' padding and ReLU6 checked against PyTorch's arithmetic.
 * Skipped where Python has no PyTorch (Debian: python3-torch python3-torchvision), except under CI=true,
 * where `.ci/run` installs them and a missing PyTorch fails the test.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { exportOnnx } from '../model/onnx/export.ts';
import { loadArtifact, planFor } from '../model/weights.ts';
import { importTimmWeights } from '../model/weights-timm.ts';
import { tempDir } from './support/fixtures.ts';

const SCRIPT = fileURLToPath(new URL('./support/torch-lite.py', import.meta.url));

async function torchLite(out: string): Promise<string | undefined> {
  const reasons: string[] = [];
  for (const python of [...new Set([process.env.EFFITAG_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p))]) {
    try {
      await promisify(execFile)(python, [SCRIPT, out], { timeout: 300_000 });
      return undefined;
    } catch (err) {
      const e = err as { code?: number | string; stderr?: string; message: string };
      if (e.code !== 3 && e.code !== 'ENOENT') throw err; // PyTorch there, but the script failed: a real failure
      reasons.push(`${python}: ${e.stderr?.trim() || e.message}`);
    }
  }
  return reasons.join('; ');
}

describe('EfficientNet-Lite0 ≡ PyTorch (timm layout)', () => {
  it('imported from PyTorch-written timm-layout safetensors, the ONNX export gives PyTorch’s probabilities within 1e-4', async (t) => {
    const dir = await tempDir('effitag-lite-torch-');
    const missing = await torchLite(dir);
    if (missing && process.env.CI === 'true')
      throw new Error(`CI=true and no PyTorch (.ci/run installs python3-torch python3-torchvision): ${missing}`);
    if (missing) return t.skip(`no PyTorch: ${missing}`);
    const manifest = await importTimmWeights(join(dir, 'model.safetensors'), { variant: 'lite0', out: join(dir, 'art') });
    assert.equal(manifest.tensors.length, 247);
    const artifact = await loadArtifact(join(dir, 'art'), 'lite0');
    // The NCHW export takes normalised pixels, as PyTorch's model does.
    const bytes = exportOnnx(planFor(manifest), artifact.weights, { layout: 'nchw' });
    const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
    const input = new Float32Array((await readFile(join(dir, 'input.bin'))).buffer.slice(0));
    const logits = new Float32Array((await readFile(join(dir, 'logits.bin'))).buffer.slice(0));
    const out = await session.run({ images: new ort.Tensor('float32', input, [3, 3, 224, 224]) }, ['probabilities']);
    await session.release();
    const p = out.probabilities.data as Float32Array;
    const tops: number[] = [];
    for (let i = 0; i < 3; i++) {
      const row = logits.subarray(i * 1000, (i + 1) * 1000);
      const max = Math.max(...row);
      const exp = row.map((v) => Math.exp(v - max));
      const sum = exp.reduce((a, b) => a + b, 0);
      const torch = exp.map((v) => v / sum);
      const ours = p.subarray(i * 1000, (i + 1) * 1000);
      const top = (q: Float32Array) => [...q.keys()].sort((a, b) => q[b] - q[a]).slice(0, 5);
      assert.deepEqual(top(ours), top(torch), `image ${i} top-5`);
      tops.push(top(torch)[0]);
      assert.ok(torch[top(torch)[0]] > 0.01, `a peaked distribution, over 10× uniform (top-1 ${torch[top(torch)[0]]})`);
      let worst = 0;
      for (let k = 0; k < 1000; k++) worst = Math.max(worst, Math.abs(ours[k] - torch[k]));
      assert.ok(worst < 1e-4, `image ${i}: max |Δp| = ${worst}`);
      t.diagnostic(`image ${i}: top-1 p ${torch[top(torch)[0]].toFixed(4)}, max |Δp| ${worst.toExponential(2)}`);
    }
    // The network reads its input (a random network that forgets it would agree with anything).
    assert.ok(new Set(tops).size > 1, `top-1 classes ${tops.join(', ')}: the same for every input`);
  });
});
