/**
 * Uploads per second into the embedded stack, the way a sync tool meets it: many small PUTs through
 * the AWS SDK, each answered by the S3 stand-in and announced to the intake queue (the router off, so
 * only the stand-ins' own work is timed). Run before and after a change to the stand-ins' request
 * handling (signature checking): `node --import tsx bench/stack-uploads.ts [--seconds 15] [--rounds 3]`.
 * Prints one JSON line: the median uploads/s of the rounds and each round's figure.
 */
import '../bin/hide-node-notice.js';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startEmbeddedStack } from '../local/stack.ts';
import { silentLogger } from '../pipeline/log.ts';
import { parseTiers } from '../tiers/schema.ts';
import { benchTiers, median, writeBenchWeights } from './util.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '15' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '16' },
    bytes: { type: 'string', default: '10240' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);
const body = new Uint8Array(Number(values.bytes)).fill(7);

const work = await mkdtemp(join(tmpdir(), 'effitag-bench-uploads-'));
try {
  const weightsDir = await writeBenchWeights(join(work, 'weights'));
  const stack = await startEmbeddedStack({
    dataDir: join(work, 'data'),
    tiers: parseTiers(benchTiers(8)),
    weightsDir,
    log: silentLogger,
    runRouter: false,
    runWorkers: () => false,
  });
  try {
    const perRound: number[] = [];
    let n = 0;
    for (let round = 0; round <= rounds; round++) {
      const until = Date.now() + (round === 0 ? 3 : seconds) * 1000; // round 0 warms up, untimed
      let done = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (Date.now() < until) {
            await stack.s3.send(new PutObjectCommand({ Bucket: stack.bucket, Key: `bench/${n++}.bin`, Body: body }));
            done++;
          }
        }),
      );
      if (round > 0) perRound.push(Math.round((done / ((performance.now() - started) / 1000)) * 10) / 10);
    }
    process.stdout.write(
      `${JSON.stringify({
        uploadsPerSecond: median(perRound),
        rounds: perRound,
        seconds,
        concurrency,
        bytes: body.length,
        cpus: cpus().length,
        at: new Date().toISOString(),
      })}\n`,
    );
  } finally {
    await stack.stop();
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
