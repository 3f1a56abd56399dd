/**
 * Pipeline benchmark: images/s through the embedded stack (S3 GET over HTTP, decode, inference,
 * CopyObject write-back, its Copy event through the router, SQS delete) against the raw engine on
 * the same images and batch size. Tasks are enqueued first (the router runs as usual) and then one
 * worker drains them, so the figure is the worker's steady-state throughput. Goal: ≥ 0.8× the raw
 * engine.
 *
 * Two baselines: the engine alone on decoded images (the goal's), and decode + engine on the same
 * JPEG bytes (what any tagging of these images must do, with no S3 or SQS). Everything runs in this
 * process, so its CPU time per image splits the cost: inference, decoding, and the rest (HTTP
 * clients, the S3 and SQS stand-ins, routing, write-back), all on the same cores.
 *
 * `--isolated` puts this process (baselines, worker) on core 0 and the stack (S3, SQS, the router)
 * in its own process on the other cores, as on AWS, where S3 and SQS are not on the worker's machine.
 * The ratio is then the worker's own: its decoding and HTTP clients against the engine on one core.
 */
import { execFileSync } from 'node:child_process';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { ortEngine, WORKER_ORT_OPTIONS } from '../inference/ort-engine.ts';
import { decodeImage } from '../inference/image.ts';
import { startEmbeddedStack } from '../local/stack.ts';
import { openStack } from '../pipeline/aws/stack-handle.ts';
import { Counters, silentLogger } from '../pipeline/log.ts';
import { directoryCatalog, type ModelCatalog } from '../pipeline/models.ts';
import type { MessageQueue, ObjectStore } from '../pipeline/ports.ts';
import { unitVector } from '../pipeline/index-writes.ts';
import { makeWorker, type Worker } from '../pipeline/worker.ts';
import { MemoryVectorIndex } from '../test/support/memory-vectors.ts';
import { parseTiers, type TiersFile } from '../tiers/schema.ts';
import { syntheticJpeg } from './images.ts';
import { benchTiers, cpuMsSince, median, spawnLocalStack, writeBenchWeights, type BenchContext } from './util.ts';

export interface PipelineBenchOptions {
  images: number;
  batch: number;
  runs: number;
  variant: string;
  /** This process (engine, worker) on core 0; the stack (S3, SQS, router) on the other cores. */
  isolated?: boolean;
}

/**
 * `pipeline --embeddings`: the worker's throughput with and without storing embeddings (issue 23:
 * the features come out of the same inference; what is added is the second output's copy, the L2
 * normalisation and one put per batch, written behind the next batch's inference). Three modes on
 * the same stack, each draining its own third of the uploads: no vector index; an in-memory one
 * (the worker's own cost, the index's CPU elsewhere, as S3 Vectors is on AWS); and the embedded
 * stack's S3 Vectors stand-in over HTTP in this process (its CPU on the same cores too). The order
 * rotates per run, so load drift on shared cores falls on every mode; each run's modes are compared
 * with each other (paired), then the median over runs. Target: under 5 % slower.
 */
export async function benchEmbeddingsCost(ctx: BenchContext, opts: Omit<PipelineBenchOptions, 'isolated'>) {
  const weightsDir = join(ctx.workDir, 'weights');
  await writeBenchWeights(weightsDir, opts.variant);
  const tiers = parseTiers(benchTiers(opts.batch, opts.variant));
  const images = await Promise.all(Array.from({ length: 16 }, (_, i) => syntheticJpeg(640, 480, i + 1)));
  type Mode = 'without' | 'memory' | 'with';
  const rates: Record<Mode, number[]> = { without: [], memory: [], with: [] };
  // CPU time per image of this process (worker, engine, and the stand-ins it talks to, the S3 Vectors one
  // included): steadier than the rate on shared cores, and an upper bound on the worker's own share.
  const cpu: Record<Mode, number[]> = { without: [], memory: [], with: [] };
  const stored: number[] = [];
  for (let r = 0; r < opts.runs; r++) {
    // Rotated per run, so each mode takes each place in the order as often.
    const modes: Mode[] = ['without', 'memory', 'with'];
    for (const mode of modes.map((_, i) => modes[(i + r) % modes.length])) {
      // A stack of its own per drain: a FIFO message group left in flight by the previous drain's
      // worker would hold the next drain up for its visibility timeout.
      const stack = await benchStack(join(ctx.workDir, `emb-${r}-${mode}`), weightsDir, tiers);
      try {
        const model = await stack.models.load(opts.variant);
        await model.classifyWithFeatures?.([await decodeImage(images[0], model.resolution)]); // warm-up
        const prefix = `bench/${r}/${mode}/`;
        // Counted before the uploads: the router enqueues while they are still going.
        const before = stack.counters.get('router.enqueued.bench');
        for (let i = 0; i < opts.images; i += 32)
          await Promise.all(
            Array.from({ length: Math.min(32, opts.images - i) }, (_, j) =>
              stack.s3.send(
                new PutObjectCommand({
                  Bucket: stack.bucket,
                  Key: `${prefix}${i + j}.jpg`,
                  Body: images[(i + j) % images.length],
                  ContentType: 'image/jpeg',
                }),
              ),
            ),
          );
        while (stack.counters.get('router.enqueued.bench') - before < opts.images) await new Promise((res) => setTimeout(res, 50));
        const counters = new Counters();
        const worker = makeWorker({
          store: stack.store,
          queue: stack.tierQueues.bench.queue,
          tiers,
          models: stack.models,
          counters,
          // 'memory': the worker's own cost (features, normalisation, the call), the index's CPU elsewhere
          // as on AWS; 'with': the embedded stack's S3 Vectors stand-in over HTTP, in this process.
          ...(mode === 'with' ? { vectors: stack.s3vectors.vectors } : mode === 'memory' ? { vectors: new MemoryVectorIndex() } : {}),
          options: { batchSize: opts.batch, waitSeconds: 1 },
        });
        const { seconds, cpuMsPerImage } = await timedDrain(worker, counters, opts.images);
        cpu[mode].push(cpuMsPerImage);
        rates[mode].push(opts.images / seconds);
        if (mode !== 'without') stored.push(counters.get('vectors.stored'));
        ctx.log(
          `run ${r + 1}, ${mode} embeddings: ${opts.images} images in ${seconds.toFixed(2)} s = ${(opts.images / seconds).toFixed(1)} images/s, ${cpu[mode].at(-1)!.toFixed(1)} CPU-ms per image`,
        );
      } finally {
        await stack.stop();
      }
    }
  }
  // The engine alone, interleaved batch by batch (steadier than whole drains on shared cores): the
  // same session's inference with and without reading the features output, and the normalisation.
  const engine = await ortEngine({ ...WORKER_ORT_OPTIONS, log: () => {} }).load(join(weightsDir, opts.variant));
  const decoded = await Promise.all(images.map((b) => decodeImage(b, engine.resolution)));
  const batch = Array.from({ length: opts.batch }, (_, i) => decoded[i % decoded.length]);
  await engine.classify(batch);
  await engine.classifyWithFeatures!(batch);
  const ms: Record<'classify' | 'withFeatures' | 'normalise', number[]> = { classify: [], withFeatures: [], normalise: [] };
  for (let i = 0; i < 40; i++) {
    for (const m of i % 2 ? (['classify', 'withFeatures'] as const) : (['withFeatures', 'classify'] as const)) {
      const t0 = performance.now();
      const out = m === 'classify' ? await engine.classify(batch) : await engine.classifyWithFeatures!(batch);
      ms[m].push(performance.now() - t0);
      if (m === 'withFeatures') {
        const t1 = performance.now();
        for (const o of out as { features: Float32Array }[]) unitVector(o.features);
        ms.normalise.push(performance.now() - t1);
      }
    }
  }
  await engine.dispose();
  const engineMs = { classify: median(ms.classify), withFeatures: median(ms.withFeatures), normalise: median(ms.normalise) };
  ctx.log(
    `engine, batch ${opts.batch}, interleaved ×40: classify ${engineMs.classify.toFixed(1)} ms, with features ${engineMs.withFeatures.toFixed(1)} ms (${(100 * (engineMs.withFeatures / engineMs.classify - 1)).toFixed(1)} %), normalising ${(engineMs.normalise / opts.batch).toFixed(3)} ms per image`,
  );
  const without = median(rates.without);
  const withEmbeddings = median(rates.with);
  const inMemory = median(rates.memory);
  // Paired per run: each run's halves compared, then the median over runs.
  const slowerThan = (m: Mode) => median(rates[m].map((w, i) => 1 - w / rates.without[i]));
  const moreCpu = (m: Mode) => median(cpu[m].map((c, i) => c / cpu.without[i] - 1));
  const pct = (v: number) => `${(100 * v).toFixed(1)} %`;
  ctx.log(
    `without embeddings ${without.toFixed(1)} images/s, ${median(cpu.without).toFixed(1)} CPU-ms per image; in-memory index ${inMemory.toFixed(1)}/s (paired: ${pct(slowerThan('memory'))} slower, ${pct(moreCpu('memory'))} more CPU); S3 Vectors stand-in ${withEmbeddings.toFixed(1)}/s (${pct(slowerThan('with'))} slower, ${pct(moreCpu('with'))} more CPU); target under 5 % slower`,
  );
  return {
    variant: opts.variant,
    images: opts.images,
    batch: opts.batch,
    runs: rates,
    cpuMsPerImage: cpu,
    vectorsStored: stored,
    engineMsPerBatch: engineMs,
    withoutImagesPerSecond: without,
    memoryImagesPerSecond: inMemory,
    withImagesPerSecond: withEmbeddings,
    summary: {
      engineWithFeatures: engineMs.withFeatures / engineMs.classify - 1,
      memoryIndex: { slowerFraction: slowerThan('memory'), moreCpuFraction: moreCpu('memory') },
      s3VectorsStandIn: { slowerFraction: slowerThan('with'), moreCpuFraction: moreCpu('with') },
      target: 'with embeddings under 5 % slower',
    },
  };
}

export async function benchPipeline(ctx: BenchContext, opts: PipelineBenchOptions) {
  if (opts.isolated) pinToFirstCore(ctx);
  await writeBenchWeights(join(ctx.workDir, 'weights'), opts.variant);
  const tiers = parseTiers(benchTiers(opts.batch, opts.variant));
  // 640×480 photos: the shorter side is over the model's resolution (B0 224 … B3 300), so every image is resized.
  const images = await Promise.all(Array.from({ length: 16 }, (_, i) => syntheticJpeg(640, 480, i + 1)));

  // Raw engine at its best (spinning threads): decode once, classify batches of the same size.
  const engine = ortEngine({ log: () => {} });
  const model = await engine.load(join(ctx.workDir, 'weights', opts.variant));
  const size = model.resolution;
  ctx.log(`variant ${opts.variant} at ${size}×${size}, batch ${opts.batch}`);
  const decoded = await Promise.all(images.map((b) => decodeImage(b, size)));
  const batch = Array.from({ length: opts.batch }, (_, i) => decoded[i % decoded.length]);
  await model.classify(batch);
  const rawTimes: number[] = [];
  let cpu0 = process.cpuUsage();
  for (let r = 0; r < opts.runs; r++) {
    const t0 = performance.now();
    for (let done = 0; done < opts.images; done += opts.batch) await model.classify(batch);
    rawTimes.push((performance.now() - t0) / 1000);
  }
  const rawCpuMsPerImage = cpuMsSince(cpu0) / (opts.runs * opts.images);
  const rawImagesPerSecond = opts.images / median(rawTimes);
  ctx.log(
    `raw engine (ort, batch ${opts.batch}): ${rawImagesPerSecond.toFixed(1)} images/s, ${rawCpuMsPerImage.toFixed(1)} CPU-ms per image`,
  );

  // Decode + engine: the same JPEG bytes decoded and classified, the next batch decoded during inference.
  const decodeTimes: number[] = [];
  cpu0 = process.cpuUsage();
  for (let r = 0; r < opts.runs; r++) {
    const t0 = performance.now();
    const decodeBatch = (start: number) =>
      Promise.all(Array.from({ length: opts.batch }, (_, i) => decodeImage(images[(start + i) % images.length], size)));
    let next = decodeBatch(0);
    for (let done = 0; done < opts.images; done += opts.batch) {
      const current = await next;
      if (done + opts.batch < opts.images) next = decodeBatch(done + opts.batch);
      await model.classify(current);
    }
    decodeTimes.push((performance.now() - t0) / 1000);
  }
  const decodeEngineCpuMsPerImage = cpuMsSince(cpu0) / (opts.runs * opts.images);
  const decodeEngineImagesPerSecond = opts.images / median(decodeTimes);
  ctx.log(
    `decode + engine (same JPEGs, no S3/SQS): ${decodeEngineImagesPerSecond.toFixed(1)} images/s, ${decodeEngineCpuMsPerImage.toFixed(1)} CPU-ms per image`,
  );
  await model.dispose();

  const pipelineRates: number[] = [];
  const pipelineCpu: number[] = [];
  const weightsDir = join(ctx.workDir, 'weights');
  for (let r = 0; r < opts.runs; r++) {
    const stack = opts.isolated ? await isolatedStack(ctx, weightsDir, opts) : await inProcessStack(ctx, weightsDir, tiers, r);
    try {
      await stack.models.load(opts.variant);
      for (let i = 0; i < opts.images; i += 32) {
        await Promise.all(
          Array.from({ length: Math.min(32, opts.images - i) }, (_, j) =>
            stack.s3.send(
              new PutObjectCommand({
                Bucket: 'effitag-local',
                Key: `bench/${r}/${i + j}.jpg`,
                Body: images[(i + j) % images.length],
                ContentType: 'image/jpeg',
              }),
            ),
          ),
        );
      }
      while ((await stack.enqueued()) < opts.images) await new Promise((res) => setTimeout(res, 50));
      const counters = new Counters();
      const worker = makeWorker({
        store: stack.store,
        queue: stack.queue,
        tiers,
        models: stack.models,
        counters,
        options: { batchSize: opts.batch, waitSeconds: 1 },
      });
      const { seconds, cpuMsPerImage } = await timedDrain(worker, counters, opts.images);
      pipelineCpu.push(cpuMsPerImage);
      pipelineRates.push(opts.images / seconds);
      ctx.log(
        `pipeline run ${r + 1}: ${opts.images} images in ${seconds.toFixed(2)} s = ${(opts.images / seconds).toFixed(1)} images/s, ${pipelineCpu.at(-1)!.toFixed(1)} CPU-ms per image${opts.isolated ? ' in the worker process' : ''}`,
      );
    } finally {
      await stack.stop();
    }
  }
  const pipelineImagesPerSecond = median(pipelineRates);
  const ratio = pipelineImagesPerSecond / rawImagesPerSecond;
  const pipelineCpuMsPerImage = median(pipelineCpu);
  const decodeCpuMsPerImage = decodeEngineCpuMsPerImage - rawCpuMsPerImage;
  const cpuSplit = {
    inference: rawCpuMsPerImage,
    decode: decodeCpuMsPerImage,
    requestsAndStandIns: pipelineCpuMsPerImage - decodeEngineCpuMsPerImage,
  };
  ctx.log(
    `pipeline: ${pipelineImagesPerSecond.toFixed(1)} images/s = ${ratio.toFixed(2)}× the raw engine (goal ≥ 0.8×), ${(pipelineImagesPerSecond / decodeEngineImagesPerSecond).toFixed(2)}× decode + engine`,
  );
  if (opts.isolated) {
    ctx.log(
      `CPU-ms per image in the worker process (core 0): inference ${cpuSplit.inference.toFixed(1)}, decoding ${cpuSplit.decode.toFixed(1)}, its HTTP clients and the rest ${cpuSplit.requestsAndStandIns.toFixed(1)} (of ${pipelineCpuMsPerImage.toFixed(1)})`,
    );
  } else {
    ctx.log(
      `CPU-ms per image in the pipeline: inference ${cpuSplit.inference.toFixed(1)}, decoding ${cpuSplit.decode.toFixed(1)}, HTTP clients + S3/SQS stand-ins + routing ${cpuSplit.requestsAndStandIns.toFixed(1)} (of ${pipelineCpuMsPerImage.toFixed(1)})`,
    );
  }
  ctx.log(`  → bound while CPU-bound: inference share ${(rawCpuMsPerImage / pipelineCpuMsPerImage).toFixed(2)} of the pipeline's CPU time`);
  return {
    variant: opts.variant,
    isolated: !!opts.isolated,
    images: opts.images,
    batch: opts.batch,
    rawImagesPerSecond,
    decodeEngineImagesPerSecond,
    pipelineImagesPerSecond,
    runs: pipelineRates,
    cpuMsPerImage: { raw: rawCpuMsPerImage, decodeEngine: decodeEngineCpuMsPerImage, pipeline: pipelineCpuMsPerImage, split: cpuSplit },
    summary: { ratio, ratioToDecodeEngine: pipelineImagesPerSecond / decodeEngineImagesPerSecond, goal: 'pipeline ≥ 0.8× raw engine' },
  };
}

interface BenchStack {
  s3: S3Client;
  store: ObjectStore;
  queue: MessageQueue;
  models: ModelCatalog;
  /** Tasks the router has put on the tier queue. */
  enqueued(): Promise<number>;
  stop(): Promise<void>;
}

/** Runs the worker until it has tagged `images`, then stops it: the wall seconds, and this process's CPU ms per image. */
async function timedDrain(worker: Worker, counters: Counters, images: number): Promise<{ seconds: number; cpuMsPerImage: number }> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  void worker.run();
  while (counters.get('tagged') < images) await new Promise((res) => setTimeout(res, 20));
  const seconds = (performance.now() - t0) / 1000;
  const cpuMsPerImage = cpuMsSince(c0) / images;
  await worker.stop();
  return { seconds, cpuMsPerImage };
}

/** An embedded stack on free ports whose workers the bench runs itself (none of its own). */
function benchStack(dataDir: string, weightsDir: string, tiers: TiersFile) {
  return startEmbeddedStack({
    dataDir,
    tiers,
    weightsDir,
    engine: ortEngine({ ...WORKER_ORT_OPTIONS, log: () => {} }),
    log: silentLogger,
    runWorkers: () => false,
    s3Port: 0,
    sqsPort: 0,
  });
}

/** The embedded stack in this process, sharing its cores with the worker. */
async function inProcessStack(ctx: BenchContext, weightsDir: string, tiers: TiersFile, run: number): Promise<BenchStack> {
  const stack = await benchStack(join(ctx.workDir, `s3-${run}`), weightsDir, tiers);
  return {
    s3: stack.s3,
    store: stack.store,
    queue: stack.tierQueues.bench.queue,
    models: stack.models,
    enqueued: async () => stack.counters.get('router.enqueued.bench'),
    stop: () => stack.stop(),
  };
}

/** The embedded stack as its own process on cores 1…n−1, as S3 and SQS are off the worker's machine on AWS. */
async function isolatedStack(ctx: BenchContext, weightsDir: string, opts: PipelineBenchOptions): Promise<BenchStack> {
  const cores = cpus().length;
  const proc = await spawnLocalStack(ctx, {
    weightsDir,
    tiers: benchTiers(opts.batch, opts.variant),
    args: ['--no-workers'],
    cpus: `1-${cores - 1}`,
  });
  const conn = openStack(proc.handle);
  const { s3, sqs, store } = conn;
  const { bench: queue } = conn.queues;
  const url = queue.url;
  const models = directoryCatalog(weightsDir, ortEngine({ ...WORKER_ORT_OPTIONS, log: () => {} }));
  return {
    s3,
    store,
    queue,
    models,
    async enqueued() {
      const a = await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages'] }));
      return Number(a.Attributes?.ApproximateNumberOfMessages ?? 0);
    },
    async stop() {
      await models.dispose();
      conn.close();
      await proc.stop();
    },
  };
}

/** Pin this process, threads included (onnxruntime's and libvips' are made later and inherit it), to core 0. */
function pinToFirstCore(ctx: BenchContext): void {
  if (process.platform !== 'linux' || cpus().length < 2) throw new Error('--isolated needs Linux (taskset) and at least 2 cores');
  execFileSync('taskset', ['-a', '-cp', '0', String(process.pid)], { stdio: 'ignore' });
  ctx.log(
    `isolated: this process (engine, worker) on core 0 (${availableParallelism()} core visible), the stack on cores 1-${cpus().length - 1}`,
  );
}
