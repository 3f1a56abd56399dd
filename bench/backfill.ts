/**
 * Backfill benchmark: N objects in the embedded stack, which runs as its own process (`effitag local
 * --no-router --no-workers`, as a user's stack would), and one backfill from this process through the
 * real router core and FIFO queue. Reports keys/s and this process's memory sampled through the run:
 * flat memory means the listing is streamed.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { openStack } from '../pipeline/aws/stack-handle.ts';
import { runBackfill, TaskBatcher } from '../pipeline/backfill.ts';
import { makeRouter } from '../pipeline/router.ts';
import { parseTiers } from '../tiers/schema.ts';
import { benchTiers, cpuMsSince, spawnLocalStack, writeBenchWeights, type BenchContext } from './util.ts';

const TIERS = benchTiers(8);

export async function benchBackfill(ctx: BenchContext, opts: { objects: number; concurrency: number }) {
  const weightsDir = await writeBenchWeights(join(ctx.workDir, 'weights'));
  const stack = await spawnLocalStack(ctx, { weightsDir, tiers: TIERS, args: ['--no-router', '--no-workers'] });
  try {
    const conn = openStack(stack.handle);
    const { s3, store } = conn;
    const png = await sharp({ create: { width: 320, height: 240, channels: 3, background: '#808080' } })
      .png()
      .toBuffer();
    const t0 = performance.now();
    for (let i = 0; i < opts.objects; i += 64) {
      await Promise.all(
        Array.from({ length: Math.min(64, opts.objects - i) }, (_, j) =>
          s3.send(new PutObjectCommand({ Bucket: 'effitag-local', Key: `photos/${String(i + j).padStart(6, '0')}.png`, Body: png })),
        ),
      );
    }
    ctx.log(`uploaded ${opts.objects} objects in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const tiers = parseTiers(TIERS);
    const { queues } = conn;
    const batcher = new TaskBatcher(queues);
    const router = makeRouter({
      store,
      queues: {},
      tiers,
      models: await conn.markers(tiers),
      sink: (t) => batcher.add(t),
    });
    // Live heap (after a full GC; npm run bench passes --expose-gc) when the run passes each quarter,
    // and RSS every 250 ms for the peak. A GC on every sample would cost the run a sixth of its CPU.
    const gc = (globalThis as { gc?: () => void }).gc;
    const liveHeapMB: number[] = [];
    const rssMB: number[] = [];
    const sampler = setInterval(() => rssMB.push(process.memoryUsage().rss / 1048576), 250);
    const onProgress = (r: { listed: number }) => {
      while (liveHeapMB.length < 4 && r.listed >= (opts.objects * (liveHeapMB.length + 1)) / 4) {
        gc?.();
        liveHeapMB.push(process.memoryUsage().heapUsed / 1048576);
      }
    };
    const cpu0 = process.cpuUsage();
    const stackCpu0 = stack.cpuMs();
    const start = performance.now();
    const report = await runBackfill(
      { store, router, batcher, onProgress },
      { bucket: 'effitag-local', prefix: 'photos/', filter: { mode: 'stale' }, concurrency: opts.concurrency },
    );
    const seconds = (performance.now() - start) / 1000;
    clearInterval(sampler);
    const ownCpuMsPerKey = cpuMsSince(cpu0) / report.listed;
    const stackCpuMsPerKey = (stack.cpuMs() - stackCpu0) / report.listed;
    ctx.log(`CPU per key: backfill process ${ownCpuMsPerKey.toFixed(2)} ms, embedded S3+SQS process ${stackCpuMsPerKey.toFixed(2)} ms`);
    const enqueuedPerSecond = report.enqueued / seconds;
    const heap = liveHeapMB.map(Math.round);
    const peakRss = Math.max(...rssMB, process.memoryUsage().rss / 1048576);
    ctx.log(
      `backfill: ${report.listed} listed, ${report.enqueued} enqueued in ${seconds.toFixed(1)} s = ${enqueuedPerSecond.toFixed(0)} keys/s enqueued (goal ≥ 2,000)`,
    );
    // Both processes share this machine's cores: their CPU per key bounds the rate.
    const cores = availableParallelism();
    const cpuBoundKeysPerSecond = (cores * 1000) / (ownCpuMsPerKey + stackCpuMsPerKey);
    ctx.log(
      `  → CPU-bound ceiling on ${cores} cores: ${cpuBoundKeysPerSecond.toFixed(0)} keys/s (reached ${((100 * enqueuedPerSecond) / cpuBoundKeysPerSecond).toFixed(0)} %)`,
    );
    ctx.log(`backfill process memory: heap used at 25/50/75/100 % of the run ${heap.join(' / ')} MB, peak RSS ${peakRss.toFixed(0)} MB`);
    conn.close();
    return {
      objects: opts.objects,
      concurrency: opts.concurrency,
      seconds,
      enqueuedPerSecond,
      ownCpuMsPerKey,
      stackCpuMsPerKey,
      cpuBoundKeysPerSecond,
      heapMBByQuarter: heap,
      peakRssMB: peakRss,
      report,
      summary: { enqueuedPerSecond, goal: '≥ 2,000 keys/s with flat memory' },
    };
  } finally {
    await stack.stop();
  }
}
