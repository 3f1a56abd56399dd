/**
 * The GPU worker image, checked without Docker: pinned bases with the CUDA/cuDNN libtensorflow 2.9.1
 * loads, a builder stage with the tools tfjs-node-gpu's fallback compile needs, the runtime settings,
 * a build context that holds exactly what the image uses, runtime modules pinned to what the tests
 * ran, and the start-up refusal to run TensorFlow on the CPU.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { IgnoreMode, IgnoreStrategy } from 'aws-cdk-lib';
import { build } from 'esbuild';
import { GPU_WORKER_DOCKERFILE, gpuWorkerContextRules, REPO_ROOT } from '../cdk/constructs/bundling.ts';
import { assertGpuDevice } from '../model/tfjs-backend.ts';
import { dockerfileEnv, imageModules } from './rehearsal/container.ts';
import { copyTree } from './rehearsal/lambda.ts';

const dockerfile = readFileSync(join(REPO_ROOT, GPU_WORKER_DOCKERFILE), 'utf8');
const stages = dockerfile.split(/\n(?=FROM )/).slice(1);

describe('GPU worker image (Dockerfile)', () => {
  it('bases pinned by digest: CUDA 11 with cuDNN 8 (libcudart.so.11.0, libcudnn.so.8) and Node 22', () => {
    const args = Object.fromEntries([...dockerfile.matchAll(/^ARG (\w+)=(\S+)$/gm)].map((m) => [m[1], m[2]]));
    assert.match(args.CUDA_IMAGE, /^nvidia\/cuda:11\.\d+\.\d+-cudnn8-runtime-ubuntu22\.04@sha256:[0-9a-f]{64}$/);
    assert.match(args.NODE_IMAGE, /^node:22\.\d+\.\d+-bookworm-slim@sha256:[0-9a-f]{64}$/);
    for (const from of dockerfile.match(/^FROM .*/gm)!)
      assert.match(from, /^FROM \$\{(CUDA|NODE)_IMAGE\}/, `${from}: every stage from a pinned base`);
  });

  it("native modules are installed from the lockfile on the runtime's OS, with the tools a node-gyp fallback needs", () => {
    const modules = stages.find((s) => / AS modules/.test(s.split('\n')[0]))!;
    assert.match(modules.split('\n')[0], /^FROM \$\{CUDA_IMAGE\}/, 'same OS and glibc as the runtime stage');
    for (const tool of ['build-essential', 'python3']) assert.ok(modules.includes(tool), tool);
    assert.match(modules, /npm ci --omit=dev/);
    assert.match(modules, /COPY containers\/gpu-worker\/package\.json containers\/gpu-worker\/package-lock\.json/);
  });

  it('runtime: GPU memory grows on demand, a large CUDA JIT cache on a path its unprivileged user owns', () => {
    const env = dockerfileEnv();
    assert.equal(env.TF_FORCE_GPU_ALLOW_GROWTH, 'true');
    assert.equal(env.CUDA_CACHE_PATH, '/var/cache/cuda');
    assert.ok(Number(env.CUDA_CACHE_MAXSIZE) >= 1024 ** 3);
    assert.equal(env.EFFITAG_TFJS_BACKEND, 'tensorflow-gpu');
    const runtime = stages[stages.length - 1];
    assert.match(runtime, /^USER 1000$/m);
    assert.match(runtime, /chown 1000:1000 [^\n]*\/var\/cache\/cuda/);
  });

  it('the build context holds what the image uses and nothing else (tests and docs do not change the image)', async () => {
    const ignore = IgnoreStrategy.fromCopyOptions({ exclude: gpuWorkerContextRules(), ignoreMode: IgnoreMode.DOCKER }, REPO_ROOT);
    const ignored = (path: string) => ignore.ignores(join(REPO_ROOT, path));
    for (const path of [
      'README.md',
      'test/rehearsal.test.ts',
      'cdk/effitag-stack.ts',
      'bench/pipeline.ts',
      'functions/router.ts',
      'node_modules/sharp/package.json',
      'model/b0.onnx',
    ]) {
      assert.ok(ignored(path), `${path} is outside the image's context`);
    }
    const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.*) \S+$/gm)].flatMap((m) => m[1].split(' ')).filter((p) => p !== '.');
    const meta = await build({
      entryPoints: [join(REPO_ROOT, 'containers/gpu-worker/main.ts'), join(REPO_ROOT, 'containers/gpu-worker/train.ts')],
      bundle: true,
      platform: 'node',
      format: 'esm',
      write: false,
      outdir: join(tmpdir(), 'effitag-image-metafile'), // several entries need one, though nothing is written
      metafile: true,
      packages: 'external',
      logLevel: 'silent',
    });
    const sources = Object.keys(meta.metafile!.inputs);
    assert.ok(sources.length > 20);
    // cdk deploy builds from a copy of the context filtered by these rules: the Dockerfile must be in it.
    for (const path of [GPU_WORKER_DOCKERFILE, ...copied, 'scripts/bundle-gpu-worker.mjs', 'tsconfig.json', ...sources]) {
      assert.ok(!ignored(path), `${path} is needed by the image build`);
    }
  });

  it('the image installs the runtime modules the tests ran: same versions as the root lockfile', () => {
    const root = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')).packages as Record<string, { version: string }>;
    const shared = imageModules().filter((m) => root[`node_modules/${m.name}`]);
    assert.ok(shared.some((m) => m.name === 'onnxruntime-node') && shared.some((m) => m.name === 'sharp'));
    assert.deepEqual(
      shared.filter((m) => root[`node_modules/${m.name}`].version !== m.version).map((m) => `${m.name} ${m.version}`),
      [],
    );
    const image = JSON.parse(readFileSync(join(REPO_ROOT, 'containers/gpu-worker/package.json'), 'utf8'));
    assert.equal(image.dependencies['@tensorflow/tfjs-node-gpu'], '4.22.0');
  });
});

describe('GPU worker start-up check', () => {
  it('passes only when TensorFlow uses a GPU device', () => {
    assert.doesNotThrow(() => assertGpuDevice({ isGPUPackage: true, isUsingGpuDevice: true }));
    assert.throws(
      () => assertGpuDevice({ isGPUPackage: true, isUsingGpuDevice: false }),
      /GPU required but not in use: TensorFlow found no GPU device.*libcudnn\.so\.8.*Refusing to run on the CPU/,
    );
    assert.throws(() => assertGpuDevice({ isGPUPackage: false, isUsingGpuDevice: false }), /CPU build \(tfjs-node, not tfjs-node-gpu\)/);
    assert.throws(
      () => assertGpuDevice({}),
      /GPU required but not in use: the active tfjs backend is not TensorFlow/,
      'wasm or cpu is no GPU either',
    );
  });

  it('the image can train: `train.mjs` runs from the bundle with the image’s modules only; asked for the GPU without one, it says so', async () => {
    const app = mkdtempSync(join(tmpdir(), 'effitag-image-'));
    try {
      await promisify(execFile)(process.execPath, [join(REPO_ROOT, 'scripts', 'bundle-gpu-worker.mjs'), app], { cwd: REPO_ROOT });
      for (const m of imageModules()) {
        const from = join(REPO_ROOT, 'node_modules', m.name);
        if (existsSync(from)) copyTree(from, join(app, 'node_modules', m.name));
      }
      const run = (args: string[], env: Record<string, string> = {}) =>
        promisify(execFile)(process.execPath, ['train.mjs', ...args], { cwd: app, env: { PATH: process.env.PATH ?? '', ...env } }).then(
          (r) => ({ code: 0, ...r }),
          (e: { code: number; stdout: string; stderr: string }) => e,
        );
      const dry = await run(['--dry-run', '--data', '.', '--name', 'products', '--base', 'b0', '--stages', '2']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, /2\s+224\s+15\s+0\s+0\.3\b/);
      // As the image runs it: the GPU backend forced. Here tfjs-node-gpu is not installed, so training refuses to start.
      const data = join(app, 'data');
      for (const label of ['a', 'b']) mkdirSync(join(data, label), { recursive: true });
      const gpu = await run(['--data', data, '--name', 'products', '--base', 'b0', '--out', join(app, 'out')], {
        EFFITAG_TFJS_BACKEND: 'tensorflow-gpu',
      });
      assert.notEqual(gpu.code, 0);
      assert.match(gpu.stderr, /tfjs backend "tensorflow-gpu" was requested but cannot load/);
    } finally {
      rmSync(app, { recursive: true, force: true });
    }
  });

  it('`worker.mjs --check-gpu` times a batch and exits 1 unless TensorFlow ran on a GPU; without tfjs-node-gpu it says so', async () => {
    const run = (env: Record<string, string>) =>
      promisify(execFile)(process.execPath, ['--import', 'tsx', 'containers/gpu-worker/main.ts', '--check-gpu', '--batch=1'], {
        cwd: REPO_ROOT,
        env: { ...process.env, ...env },
      }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
    const dryRun = await run({ EFFITAG_TFJS_BACKEND: 'wasm' });
    assert.equal(dryRun.code, 1);
    const result = JSON.parse(dryRun.stdout);
    assert.equal(result.backend, 'wasm');
    assert.equal(result.gpuDevice, false);
    assert.ok(result.firstBatchMs > 0 && result.steadyBatchMs > 0 && result.imagesPerSecond > 0, dryRun.stdout);
    const gpu = await run({ EFFITAG_TFJS_BACKEND: 'tensorflow-gpu' });
    assert.equal(gpu.code, 1);
    assert.match(gpu.stderr, /GPU check failed.*tfjs backend \\"tensorflow-gpu\\" was requested but cannot load/);
  });
});
