/**
 * `npm run bench -- vectors`: the embedded S3 Vectors (local/s3vectors-server.ts) at 100,000 B0-sized
 * vectors (1,280 dimensions), through the adapter (pipeline/aws/s3-vectors.ts) over signed HTTP as
 * `effitag similar` uses it: how long the writes take, the stand-in's memory (its own process, so
 * the bench's vectors are not counted), query latency for a whole bucket, a folder with 1 % of the
 * vectors (searched exactly) and one with half (the graph, over-fetching), recall@10 of the graph
 * against exact search, and the restart (snapshot written at stop, loaded at start).
 *
 * The vectors are clustered (1,000 centres, noise around each), closer to image embeddings than
 * uniform random ones, which are the worst case for a graph index.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateCredentials } from '../pipeline/aws/local-credentials.ts';
import { seededRandom } from '../model/random-weights.ts';
import { S3VectorIndex, s3VectorsClient } from '../pipeline/aws/s3-vectors.ts';
import { type BenchContext, median } from './util.ts';

const DIM = 1280;
const SPACE = 'b0@0123456789ab';
const BUCKET = 'photos';

/** A small deterministic generator (mulberry32), so runs compare. */
const rng = seededRandom;

function normalize(v: Float32Array): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n);
  for (let i = 0; i < v.length; i++) v[i] /= n;
  return v;
}

function clustered(clusters: number): (i: number) => Float32Array {
  const centres = Array.from({ length: clusters }, (_, c) => {
    const r = rng(1_000_003 * (c + 1));
    return normalize(Float32Array.from({ length: DIM }, () => r() - 0.5));
  });
  return (i) => {
    const r = rng(i + 17);
    const c = centres[i % clusters];
    // Noise of about 0.6 the centre's length (a component of a unit vector is about 1/√1280 ≈ 0.028):
    // members of one cluster at a cosine of about 0.75, of different clusters about 0.
    return normalize(Float32Array.from({ length: DIM }, (_, d) => c[d] + 0.058 * (r() - 0.5)));
  };
}

/** Key layout: 1 % of the vectors under `small/`, half under `half/`, the rest under `rest/`. */
const keyOf = (i: number) => (i % 100 === 0 ? `small/${i}.jpg` : i % 2 === 1 ? `half/${i}.jpg` : `rest/${i}.jpg`);

interface Child {
  endpoint: string;
  pid: number;
  rssMb(): { rss: number; peak: number };
  stop(): Promise<number>;
}

/** The stand-in in a process of its own: its memory is then its own. */
async function startChild(
  directory: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
): Promise<Child & { readyMs: number }> {
  const started = performance.now();
  const code = `
    const { startS3VectorsServer } = await import(${JSON.stringify(new URL('../local/s3vectors-server.ts', import.meta.url).href)});
    const s = await startS3VectorsServer({ credentials: JSON.parse(process.env.CREDS), directory: process.env.DIR, buckets: ['bench-vectors'] });
    process.stdout.write(JSON.stringify({ endpoint: s.endpoint }) + '\\n');
    process.on('SIGTERM', async () => { await s.close(); process.exit(0); });
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    env: { ...process.env, CREDS: JSON.stringify(credentials), DIR: directory },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const endpoint = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve((JSON.parse(line) as { endpoint: string }).endpoint);
    });
    child.once('exit', (c) => reject(new Error(`the S3 Vectors stand-in exited (${c}) before it was ready`)));
  });
  const status = (field: string) =>
    Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  return {
    endpoint,
    pid: child.pid!,
    readyMs: performance.now() - started,
    rssMb: () => ({ rss: status('VmRSS'), peak: status('VmHWM') }),
    stop: () =>
      new Promise<number>((resolve) => {
        const t = performance.now();
        child.once('exit', () => resolve(performance.now() - t));
        child.kill('SIGTERM');
      }),
  };
}

const percentile = (values: number[], p: number) => {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};

export async function benchVectors(ctx: BenchContext, o: { vectors: number; queries: number }) {
  const credentials = generateCredentials();
  const directory = join(ctx.workDir, 'vectors');
  const vectorOf = clustered(1000);
  let child = await startChild(directory, credentials);
  const index = (c: Child) =>
    new S3VectorIndex({ client: s3VectorsClient({ endpoint: c.endpoint, credentials }), vectorBucket: 'bench-vectors' });
  let vectors = index(child);
  const idleMb = child.rssMb().rss;

  ctx.log(`writing ${o.vectors} vectors of ${DIM} dimensions (500 a call)…`);
  const writeStart = performance.now();
  for (let from = 0; from < o.vectors; from += 500) {
    const batch = Array.from({ length: Math.min(500, o.vectors - from) }, (_, j) => ({
      bucket: BUCKET,
      key: keyOf(from + j),
      vector: vectorOf(from + j),
    }));
    await vectors.put(SPACE, batch);
    if ((from / 500) % 40 === 39) ctx.log(`  ${from + 500} written, ${((performance.now() - writeStart) / 1000).toFixed(0)} s`);
  }
  const writeS = (performance.now() - writeStart) / 1000;
  const loadedMb = child.rssMb();

  // Queries: vectors near stored ones (a stored vector, moved a little), as `effitag similar` asks.
  const queryOf = (q: number) => {
    const r = rng(999_999 + q);
    const base = vectorOf((q * 7919) % o.vectors);
    return normalize(base.map((x) => x + 0.02 * (r() - 0.5)));
  };
  const timed = async (prefix: string | undefined) => {
    const ms: number[] = [];
    const results: string[][] = [];
    for (let q = 0; q < o.queries; q++) {
      const t = performance.now();
      const hits = await vectors.query(SPACE, queryOf(q), { limit: 10, bucket: BUCKET, prefix });
      ms.push(performance.now() - t);
      results.push(hits.map((h) => h.key));
    }
    return { ms, results };
  };
  const cases: { name: string; prefix?: string; share: number }[] = [
    { name: 'whole bucket (graph)', share: 1 },
    { name: 'folder small/ (1 %, exact)', prefix: 'small/', share: 0.01 },
    { name: 'folder half/ (50 %, graph with over-fetch)', prefix: 'half/', share: 0.5 },
  ];
  const queries = [];
  for (const c of cases) {
    await timed(c.prefix); // warm: the first queries page the graph in
    const { ms, results } = await timed(c.prefix);
    // Recall@10 against exact search over the same vectors (on a sample: exact search here is slow JS).
    let found = 0;
    let wanted = 0;
    const sample = Math.min(20, o.queries);
    for (let q = 0; q < sample; q++) {
      const query = queryOf(q);
      const best: { key: string; score: number }[] = [];
      for (let i = 0; i < o.vectors; i++) {
        const key = keyOf(i);
        if (c.prefix && !key.startsWith(c.prefix)) continue;
        const v = vectorOf(i);
        let dot = 0;
        for (let d = 0; d < DIM; d++) dot += v[d] * query[d];
        if (best.length < 10 || dot > best[9].score) {
          best.push({ key, score: dot });
          best.sort((a, b) => b.score - a.score);
          best.length = Math.min(best.length, 10);
        }
      }
      const got = new Set(results[q]);
      found += best.filter((b) => got.has(b.key)).length;
      wanted += best.length;
    }
    const row = {
      case: c.name,
      vectorsSearched: Math.round(o.vectors * c.share),
      medianMs: median(ms),
      p95Ms: percentile(ms, 0.95),
      recallAt10: found / wanted,
    };
    ctx.log(`  ${row.case}: median ${row.medianMs.toFixed(1)} ms, p95 ${row.p95Ms.toFixed(1)} ms, recall@10 ${row.recallAt10.toFixed(3)}`);
    queries.push(row);
  }
  const afterQueriesMb = child.rssMb();

  // Restart: the stop folds the log into a snapshot (vectors, metadata, graph); the start loads it.
  const before = (await vectors.query(SPACE, queryOf(0), { limit: 10, bucket: BUCKET })).map((h) => h.key);
  const stopMs = await child.stop();
  child = await startChild(directory, credentials);
  vectors = index(child);
  const check = (await vectors.query(SPACE, queryOf(0), { limit: 10, bucket: BUCKET })).map((h) => h.key);
  const restartedMb = child.rssMb().rss;
  await child.stop();

  const result = {
    machine: 'this host (shared 2-core, see README)',
    vectors: o.vectors,
    dimensions: DIM,
    writes: { seconds: writeS, vectorsPerSecond: o.vectors / writeS },
    memoryMb: {
      idle: idleMb,
      loaded: loadedMb.rss,
      peakWhileWriting: loadedMb.peak,
      afterQueries: afterQueriesMb.rss,
      afterRestart: restartedMb,
      rawVectors: (o.vectors * DIM * 4) / 2 ** 20,
    },
    queries,
    restart: {
      stopAndSnapshotMs: stopMs,
      startAndLoadMs: child.readyMs,
      sameHitsAfterRestart: JSON.stringify(check) === JSON.stringify(before),
    },
  };
  return {
    ...result,
    summary: {
      vectors: o.vectors,
      writeSeconds: Math.round(writeS),
      memoryMb: Math.round(loadedMb.rss),
      queryMedianMs: Object.fromEntries(queries.map((q) => [q.case, Math.round(q.medianMs * 10) / 10])),
      recallAt10: Object.fromEntries(queries.map((q) => [q.case, q.recallAt10])),
      restartLoadMs: Math.round(child.readyMs),
    },
  };
}
