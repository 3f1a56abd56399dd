/**
 * `npm run bench [-- <suite>] [--runs N] [--quick] [--variant V] [--isolated]`
 * Suites: engines (default), int8, pipeline, backfill, catch-up, journal, search, hashes, vectors, similar, train. Results print as a table and are written to
 * bench/results/<suite>.json (untracked: a fresh measurement). The figures the README and `tiers cost`
 * quote are a copy of one such file, committed under bench/reference/ with the machine it ran on.
 */
import '../bin/hide-node-notice.js';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { benchEngines } from './engines.ts';
import { benchInt8 } from './int8.ts';
import { benchEmbeddingsCost, benchPipeline } from './pipeline.ts';
import { benchSimilar } from './similar.ts';
import { benchBackfill } from './backfill.ts';
import { benchCatchUp } from './catch-up.ts';
import { benchJournal } from './journal.ts';
import { benchSearch } from './search.ts';
import { benchHashes } from './hashes.ts';
import { benchTrain } from './train.ts';
import { benchVectors } from './vectors.ts';
import type { BenchContext } from './util.ts';
import type { EngineName } from '../inference/engine.ts';

type Options = {
  runs?: number;
  quick?: boolean;
  variant: string;
  isolated?: boolean;
  embeddings?: boolean;
  minutes?: number;
  rate?: number;
  inference?: boolean;
  lite?: boolean;
};

const program = new Command('bench')
  .argument('[suite]', 'engines | int8 | pipeline | backfill | catch-up | journal | search | hashes | vectors | similar | train', 'engines')
  .option('--runs <n>', 'engines, pipeline: timed runs per measurement, median reported (default 5 and 3)', (v) => Number(v))
  .option('--quick', 'B0 only, batches 1 and 8')
  .option('--variant <v>', 'pipeline: the variant the tier runs', 'b0')
  .option('--minutes <m>', 'journal: minutes of steady uploads (default 30; --quick 2)', (v) => Number(v))
  .option('--rate <r>', 'journal: uploads per second (default 3)', (v) => Number(v))
  .option('--inference', 'journal: run the B0 (default: a fixed answer, so the shared cores keep up)')
  .option('--isolated', 'pipeline: engine and worker on core 0, the S3/SQS stack on the other cores (Linux)')
  .option(
    '--lite',
    'int8: B0 (with int8 layout experiments) and EfficientNet-Lite0 against the reference exports, and the gate on photographs for both',
  )
  .option('--embeddings', "pipeline: the worker's throughput with and without storing embeddings, paired per run")
  .action(async (suite: string, opts: Options) => {
    if (opts.runs !== undefined && !(suite === 'engines' || suite === 'int8' || suite === 'pipeline')) {
      throw new Error(`--runs applies to the engines and pipeline suites; ${suite} measures one run of its scenario`);
    }
    if (opts.runs !== undefined && !(Number.isInteger(opts.runs) && opts.runs >= 1)) throw new Error('--runs must be a whole number ≥ 1');
    const workDir = await mkdtemp(join(tmpdir(), 'effitag-bench-'));
    const ctx: BenchContext = { workDir, log: (line) => process.stdout.write(`${line}\n`) };
    try {
      let result: unknown;
      if (suite === 'engines') {
        result = await benchEngines(ctx, {
          variants: opts.quick ? ['b0'] : ['b0', 'b3'],
          batches: opts.quick ? [1, 8] : [1, 8, 32],
          engines: ['ort', 'tfjs'] as EngineName[],
          runs: opts.runs ?? 5,
        });
        // The int8 engine against the float one, paired, B0–B3 at their resolutions (bench/int8.ts).
        result = {
          ...(result as object),
          int8: await benchInt8(ctx, { variants: opts.quick ? ['b0'] : ['b0', 'b1', 'b2', 'b3'], runs: opts.runs ?? 5 }),
        };
      } else if (suite === 'int8' && opts.lite) {
        // What EfficientNet-Lite gains here, and B0's int8 layouts that are experiments only (bench/int8.ts).
        result = await benchInt8(ctx, {
          variants: ['b0', 'lite0'],
          runs: opts.runs ?? 21,
          // The gate on photographs too: does int8 Lite0 (ReLU6, no SE) agree with its float model better than int8 B0?
          gate: { copies: opts.quick ? 2 : 5 },
          experiments: {
            'int8-8bit': { weightBits: 8 },
            'int8-u8u8': { weightType: 'uint8', weightBits: 8 },
            'int8-per-tensor': { perTensorWeights: true },
            'int8-conv-only': { ops: 'conv' },
          },
        });
      } else if (suite === 'int8') {
        // Speed (float, int8, the reference export) and the quality gate on photographs (bench/gate.ts).
        result = await benchInt8(ctx, {
          variants: opts.quick ? ['b0'] : ['b0', 'b1', 'b2', 'b3'],
          runs: opts.runs ?? 15,
          gate: { copies: opts.quick ? 2 : 5 },
        });
      } else if (suite === 'pipeline' && opts.embeddings) {
        result = await benchEmbeddingsCost(ctx, {
          images: opts.quick ? 48 : 96,
          batch: 8,
          runs: opts.runs ?? (opts.quick ? 3 : 6),
          variant: opts.variant,
        });
      } else if (suite === 'similar') {
        // Embeddings of a network trained here cluster by class: precision@k against chance, end to end (bench/similar.ts).
        result = await benchSimilar(ctx, {
          variant: 'custom-w0.25-d0.25-r64',
          patterns: ['checks', 'cross', 'disc', 'stripes'],
          perLabel: opts.quick ? 40 : 120,
          epochs: opts.quick ? 1 : 3,
          stages: 3,
          queriesPerLabel: opts.quick ? 8 : 20,
          ks: [1, 5, 10],
          // The photographs' network: --quick a short fixed schedule, else the trainer's defaults.
          photoEpochs: opts.quick ? 2 : undefined,
        });
      } else if (suite === 'pipeline') {
        result = await benchPipeline(ctx, {
          images: opts.quick ? 64 : 240,
          batch: 8,
          runs: opts.runs ?? (opts.quick ? 1 : 3),
          variant: opts.variant,
          isolated: opts.isolated,
        });
      } else if (suite === 'backfill') {
        result = await benchBackfill(ctx, { objects: opts.quick ? 2000 : 10_000, concurrency: 64 });
      } else if (suite === 'catch-up') {
        result = await benchCatchUp(ctx, { objects: opts.quick ? 10_000 : 100_000 });
      } else if (suite === 'journal') {
        result = await benchJournal(ctx, {
          minutes: opts.minutes ?? (opts.quick ? 2 : 30),
          rate: opts.rate ?? 3,
          inference: opts.inference,
        });
      } else if (suite === 'search') {
        result = await benchSearch(ctx, {
          entries: opts.quick ? 10_000 : 100_000,
          galleryImages: opts.quick ? 1_000 : 10_000,
          concurrency: 16,
        });
      } else if (suite === 'hashes') {
        // Near-duplicates of real photographs: the perceptual hash's precision and recall (bench/hashes.ts).
        result = await benchHashes(ctx);
      } else if (suite === 'vectors') {
        // The embedded S3 Vectors at 100,000 B0-sized vectors: writes, memory, query latency and recall (bench/vectors.ts).
        result = await benchVectors(ctx, { vectors: opts.quick ? 10_000 : 100_000, queries: opts.quick ? 50 : 200 });
      } else if (suite === 'train') {
        result = await benchTrain(ctx, {
          variant: 'custom-w0.25-d0.25-r64',
          patterns: ['checks', 'cross', 'disc', 'stripes'],
          perLabel: opts.quick ? 60 : 200,
          epochs: opts.quick ? 1 : 4,
          stages: 4,
        });
      } else {
        throw new Error(`unknown suite "${suite}"`);
      }
      await mkdir('bench/results', { recursive: true });
      const file = join(
        'bench/results',
        `${suite}${suite === 'int8' && opts.lite ? '-lite' : ''}${suite === 'pipeline' && opts.variant !== 'b0' ? `-${opts.variant}` : ''}${suite === 'pipeline' && opts.isolated ? '-isolated' : ''}${suite === 'pipeline' && opts.embeddings ? '-embeddings' : ''}.json`,
      );
      await writeFile(file, `${JSON.stringify({ suite, at: new Date().toISOString(), ...(result as object) }, null, 2)}\n`);
      process.stdout.write(`\nwritten ${file}\n${JSON.stringify((result as { summary?: unknown }).summary ?? {}, null, 2)}\n`);
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  });

await program.parseAsync(process.argv);
