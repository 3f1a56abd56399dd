/**
 * `npm run bench -- journal [--minutes M] [--rate R]`: the catch-up journal (local/catch-up.ts)
 * under steady uploads. The embedded stack runs in this process with its workers (a B0 of random
 * weights: routing is confirmed by the object being tagged); uploads arrive at R per second for M
 * minutes. The stack is kept from ever being idle (a delayed message sits in its intake queue for
 * the whole run), so every segment dropped is dropped because its uploads were confirmed settled:
 * the case where the single-file journal of earlier versions was never trimmed.
 * Inference is a fixed answer unless `inference` (see fixedAnswerEngine). Sampled every 10 s: the journal's size on disk, its segments, the uploads not yet tagged, and the
 * longest event-loop stall (a trim that blocked the stack would show there; inference's own
 * decode and pre-processing show there too, so it is an upper bound). "Before" is what the
 * old journal held (every line appended, never trimmed while busy) and what its trim cost: one
 * synchronous read, filter and rewrite of that file.
 */
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Engine } from '../inference/engine.ts';
import { ortEngine } from '../inference/ort-engine.ts';
import { startEmbeddedStack } from '../local/stack.ts';
import type { Logger } from '../pipeline/log.ts';
import { parseTiers } from '../tiers/schema.ts';
import { gradientImage } from '../test/support/fixtures.ts';
import { benchTiers, writeBenchWeights, type BenchContext } from './util.ts';

interface Trim {
  how: string;
  segments: number;
  ms: number;
}

/** Keeps the 'journal trimmed' records; everything else at warn and above goes to stderr. */
function capturingLogger(trims: Trim[]): Logger {
  const logger: Logger = {
    log(level, msg, fields) {
      if (msg === 'journal trimmed') trims.push({ how: String(fields?.how), segments: Number(fields?.segments), ms: Number(fields?.ms) });
      else if (level === 'warn' || level === 'error') process.stderr.write(`${JSON.stringify({ level, msg, ...fields })}\n`);
    },
    child: () => logger,
  };
  return logger;
}

const dirBytes = (dir: string) => {
  try {
    return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
  } catch {
    return 0;
  }
};

/**
 * The real engine's model (its manifest, marker and resolution), answering without running the
 * network: images are still downloaded, decoded and written back. On 2 shared cores a B0 falls
 * behind a few uploads a second, and then the journal measures the backlog, not the journal.
 */
function fixedAnswerEngine(base: Engine): Engine {
  return {
    name: base.name,
    async load(dir, options) {
      const model = await base.load(dir, options);
      const answer = new Float32Array(1000).map((_, i) => (i < 3 ? 0.3 - i * 0.05 : 0.25 / 997));
      return {
        description: `${model.description}, fixed answer`,
        variant: model.variant,
        resolution: model.resolution,
        manifest: model.manifest,
        classify: async (images) => images.map(() => answer),
        dispose: () => model.dispose(),
      };
    },
  };
}

export async function benchJournal(ctx: BenchContext, o: { minutes: number; rate: number; inference?: boolean }) {
  const weights = await writeBenchWeights(join(ctx.workDir, 'weights'));
  const data = join(ctx.workDir, 'data');
  const journalDir = `${data}.journal`;
  const trims: Trim[] = [];
  const stack = await startEmbeddedStack({
    dataDir: data,
    tiers: parseTiers(benchTiers(8)),
    weightsDir: weights,
    engine: o.inference ? ortEngine({ log: () => {} }) : fixedAnswerEngine(ortEngine({ log: () => {} })),
    log: capturingLogger(trims),
  });
  await stack.catchUp;
  // Never idle: a message delayed 15 minutes (SQS's longest), sent again before it comes due.
  const keepBusy = () =>
    stack.sqs.send(
      new SendMessageCommand({
        QueueUrl: stack.intake.url,
        DelaySeconds: 900,
        MessageBody: JSON.stringify({ Records: [] }),
      }),
    );
  await keepBusy();
  const busyTimer = setInterval(() => void keepBusy(), 800_000);

  const images = await Promise.all(Array.from({ length: 16 }, (_, i) => gradientImage(160, 120, 'jpeg', i)));
  // Warm-up: the first task loads the model (not the journal's doing); measured from after it.
  await stack.s3.send(new PutObjectCommand({ Bucket: stack.bucket, Key: 'warm-up.jpg', Body: images[0], ContentType: 'image/jpeg' }));
  while (stack.counters.get('tagged') < 1) await new Promise((r) => setTimeout(r, 200));
  const taggedBefore = stack.counters.get('tagged');
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let uploaded = 0;
  let appendedBytes = 0;
  let appendedLines = 0;
  const samples: Record<string, number>[] = [];
  const started = performance.now();
  const endAt = started + o.minutes * 60_000;
  const tagged = () => stack.counters.get('tagged') - taggedBefore;
  const sample = () => {
    const stats = stack.journal.stats();
    const s = {
      seconds: Math.round((performance.now() - started) / 1000),
      uploaded,
      untagged: uploaded - tagged(),
      journalBytes: dirBytes(journalDir),
      segments: stats.segments,
      maxStallMs: Number((loop.max / 1e6).toFixed(1)),
    };
    loop.reset();
    samples.push(s);
    ctx.log(
      `  ${String(s.seconds).padStart(5)} s: ${s.uploaded} uploaded, ${s.untagged} not yet tagged; journal ${s.journalBytes} bytes in ${s.segments} segment(s); longest stall ${s.maxStallMs} ms`,
    );
  };
  const sampler = setInterval(sample, 10_000);
  ctx.log(`uploading ${o.rate}/s for ${o.minutes} min …`);
  const inFlight = new Set<Promise<void>>();
  for (let i = 0; performance.now() < endAt; i++) {
    const due = started + (i * 1000) / o.rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const key = `steady/${String(i).padStart(7, '0')}.jpg`;
    const p = stack.s3
      .send(new PutObjectCommand({ Bucket: stack.bucket, Key: key, Body: images[i % images.length], ContentType: 'image/jpeg' }))
      .then(() => {
        uploaded++;
        // What the old journal appended for it (one line per object-created event; the write-back is a second).
        const line = `${JSON.stringify({ t: Date.now(), object: { bucket: stack.bucket, key, eTag: '0'.repeat(32), size: images[i % images.length].length, kind: 'Put' } })}\n`;
        appendedBytes += 2 * line.length;
        appendedLines += 2;
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  // The tail: the last uploads tagged and their segments confirmed.
  const drainDeadline = performance.now() + 120_000;
  while (performance.now() < drainDeadline && (uploaded - tagged() > 0 || stack.journal.stats().segments > 1)) {
    await new Promise((r) => setTimeout(r, 1000));
  }
  sample();
  clearInterval(sampler);
  clearInterval(busyTimer);
  loop.disable();
  await stack.stop();

  // Before: the old journal's trim, timed on a file of what it would have held by now.
  const oldFile = join(ctx.workDir, 'old.journal.jsonl');
  const line = `${JSON.stringify({ t: Date.now(), object: { bucket: 'effitag-local', key: 'steady/0000000.jpg', eTag: '0'.repeat(32), size: 1000, kind: 'Put' } })}\n`;
  writeFileSync(oldFile, line.repeat(appendedLines));
  const t0 = performance.now();
  const kept = readFileSync(oldFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((e) => e.t >= Date.now());
  writeFileSync(`${oldFile}.tmp`, kept.map((e) => `${JSON.stringify(e)}\n`).join(''));
  renameSync(`${oldFile}.tmp`, oldFile);
  const oldTrimMs = performance.now() - t0;

  const confirmed = trims.filter((t) => t.how === 'confirmed');
  const trimMs = confirmed.map((t) => t.ms).sort((a, b) => a - b);
  const peakBytes = Math.max(...samples.map((s) => s.journalBytes));
  const summary = {
    inference: o.inference ? 'B0 (random weights)' : 'fixed answer (no network run)',
    minutes: o.minutes,
    ratePerSecond: o.rate,
    uploaded,
    taggedAtEnd: tagged(),
    peakUntagged: Math.max(...samples.map((s) => s.untagged)),
    after: {
      peakJournalBytes: peakBytes,
      endJournalBytes: samples.at(-1)?.journalBytes,
      peakSegments: Math.max(...samples.map((s) => s.segments)),
      segmentsDropped: confirmed.reduce((n, t) => n + t.segments, 0),
      idleTrims: trims.filter((t) => t.how === 'idle').length,
      // A trim pass's elapsed time: its checks are requests awaited beside the stack, not a stall.
      trimPassMsMedian: Number((trimMs[trimMs.length >> 1] ?? 0).toFixed(1)),
      trimPassMsMax: Number((trimMs.at(-1) ?? 0).toFixed(1)),
      maxEventLoopStallMs: Math.max(...samples.map((s) => s.maxStallMs)),
    },
    before: { journalBytes: appendedBytes, journalLines: appendedLines, trimMs: Math.round(oldTrimMs) },
  };
  ctx.log(`  after: journal at most ${peakBytes} bytes; ${summary.after.segmentsDropped} segments dropped as confirmed`);
  ctx.log(`  before: ${appendedBytes} bytes (${appendedLines} lines), its trim ${summary.before.trimMs} ms, blocking`);
  return { samples, summary };
}
