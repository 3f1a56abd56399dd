/**
 * `npm run bench -- catch-up`: what the embedded stack's start-up catch-up costs (local/catch-up.ts)
 * on a bucket of already-tagged objects, written straight into the S3 stand-in's folder (as 100,000
 * uploads would leave it). Three starts of the same bucket:
 * - settled: the stack was idle when it stopped (the usual restart): nothing to check;
 * - crashed: killed with 1 % of the objects uploaded since it was last idle: those are read;
 * - never:   no record (the first start on an existing folder): the bucket is listed, every object read.
 * Requests are counted by the SDK audit (EFFITAG_AUDIT_LOG); CPU is this process's, stand-ins included.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ortEngine } from '../inference/ort-engine.ts';
import { startEmbeddedStack } from '../local/stack.ts';
import { settledState, uploadJournal } from '../local/catch-up.ts';
import { modelMarker } from '../pipeline/marker.ts';
import { jsonLogger } from '../pipeline/log.ts';
import { parseTiers } from '../tiers/schema.ts';
import { gradientImage } from '../test/support/fixtures.ts';
import { benchTiers, cpuMsSince, writeBenchWeights, type BenchContext } from './util.ts';

export async function benchCatchUp(ctx: BenchContext, o: { objects: number }) {
  const weights = await writeBenchWeights(join(ctx.workDir, 'weights'));
  const manifest = JSON.parse(readFileSync(join(weights, 'b0', 'manifest.json'), 'utf8'));
  const marker = modelMarker('b0', manifest.sha256);
  const data = join(ctx.workDir, 'data');
  const bucketDir = join(data, 'effitag-local', 'photos');
  await mkdir(bucketDir, { recursive: true });
  const body = await gradientImage(160, 120, 'jpeg', 1);
  const md5 = createHash('md5').update(body).digest('hex');
  const old = new Date(Date.now() - 3600_000);
  ctx.log(`writing ${o.objects} tagged objects into the stand-in's folder …`);
  const started = performance.now();
  for (let i = 0; i < o.objects; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, o.objects - i) }, async (_, j) => {
        const base = join(bucketDir, `${String(i + j).padStart(7, '0')}.jpg._S3rver_`);
        await writeFile(`${base}object`, body);
        await writeFile(`${base}object.md5`, md5);
        await writeFile(
          `${base}metadata.json`,
          JSON.stringify({
            'content-type': 'image/jpeg',
            'x-amz-meta-effitag-model': marker,
            'x-amz-meta-effitag-status': 'tagged',
            'x-amz-meta-effitag-etag': md5,
            'x-amz-meta-effitag-tags': 'tabby=0.5',
          }),
        );
        await utimes(`${base}object`, old, old);
      }),
    );
  }
  ctx.log(`  written in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const statePath = join(ctx.workDir, 'data.state.json');
  const recent = Math.max(1, Math.floor(o.objects / 100));
  const runs: Record<string, unknown>[] = [];
  const journalDir = statePath.replace(/\.state\.json$|$/, '.journal');
  for (const scenario of ['settled', 'crashed', 'never'] as const) {
    const state = settledState(statePath);
    await rm(journalDir, { recursive: true, force: true });
    if (scenario === 'never') await writeFile(statePath, '{}');
    else await state.write(new Date(Date.now() - 600_000));
    if (scenario === 'crashed') {
      const journal = uploadJournal(journalDir);
      for (let i = 0; i < recent; i++)
        journal.append({
          bucket: 'effitag-local',
          key: `photos/${String(i * 100).padStart(7, '0')}.jpg`,
          eTag: md5,
          size: body.length,
          kind: 'Put',
        });
      journal.close();
    }
    const audit = join(ctx.workDir, `audit-${scenario}.jsonl`);
    process.env.EFFITAG_AUDIT_LOG = audit;
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    const stack = await startEmbeddedStack({
      dataDir: data,
      statePath,
      tiers: parseTiers(benchTiers(8)),
      weightsDir: weights,
      engine: ortEngine({ log: () => {} }),
      log: jsonLogger({ level: 'error' }),
      idleCheckMs: 3_600_000,
    });
    // The stack serves uploads from here on; the catch-up runs beside it.
    const readyMs = performance.now() - t0;
    const result = await stack.catchUp;
    const seconds = (performance.now() - t0) / 1000;
    const cpuMs = cpuMsSince(cpu);
    await stack.stop();
    delete process.env.EFFITAG_AUDIT_LOG;
    const calls = readFileSync(audit, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l).command as string);
    const lists = calls.filter((c) => c.startsWith('ListObjects')).length;
    const gets = calls.filter((c) => c === 'GetObject' || c === 'HeadObject').length;
    const run = {
      scenario,
      objects: o.objects,
      readyMs: Math.round(readyMs),
      checked: result?.report.listed,
      enqueued: result?.report.enqueued,
      listRequests: lists,
      objectReads: gets,
      startSeconds: Number(seconds.toFixed(2)),
      catchUpSeconds: Number(result?.seconds.toFixed(2)),
      cpuMs: Math.round(cpuMs),
      perThousandTagged: {
        requests: Number((((lists + gets) / o.objects) * 1000).toFixed(1)),
        cpuMs: Number(((cpuMs / o.objects) * 1000).toFixed(1)),
      },
    };
    runs.push(run);
    ctx.log(
      `  ${scenario.padEnd(7)} ready in ${run.readyMs} ms; start + catch-up ${run.startSeconds} s (catch-up ${run.catchUpSeconds} s): ${lists} LIST, ${gets} object reads, ${run.enqueued} enqueued; ${run.cpuMs} CPU-ms (${run.perThousandTagged.requests} requests and ${run.perThousandTagged.cpuMs} CPU-ms per 1,000 objects)`,
    );
  }
  return {
    runs,
    summary: Object.fromEntries(
      runs.map((r) => [
        r.scenario as string,
        { startSeconds: r.startSeconds, requests: (r.listRequests as number) + (r.objectReads as number), cpuMs: r.cpuMs },
      ]),
    ),
  };
}
