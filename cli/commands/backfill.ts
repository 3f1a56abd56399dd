import { parseS3Url } from '../../base/s3-url.ts';
import { join } from 'node:path';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { cacheDir } from '../../model/cache-dir.ts';
import {
  emptyReport,
  fileCheckpoint,
  resumePoint,
  runBackfill,
  TaskBatcher,
  type BackfillFilter,
  type BackfillReport,
} from '../../pipeline/backfill.ts';
import { stackTiers } from '../../pipeline/aws/stack-handle.ts';
import { backfillEmbeddings, type EmbeddingsBackfillReport } from '../../pipeline/embeddings-backfill.ts';
import { indexExisting, pruneIndex } from '../../pipeline/index-backfill.ts';
import { stackCatalog } from './similar.ts';
import { Counters, jsonLogger } from '../../pipeline/log.ts';
import { makeRouter } from '../../pipeline/router.ts';
import { estimateCosts, readBenchFile, REFERENCE_BENCH } from '../../tiers/cost.ts';
import { parseNumber, table } from '../format.ts';
import { commandStack, openCommandStack, stackVectors } from '../stack.ts';

interface BackfillCli {
  tier?: string;
  onlyMissing?: boolean;
  modelOlderThan?: boolean;
  retryFailed?: boolean;
  since?: Date;
  until?: Date;
  dryRun?: boolean;
  rate?: number;
  resume?: boolean;
  checkpoint?: string;
  concurrency: number;
  tiers?: string;
  remote?: boolean;
  json?: boolean;
  index?: boolean;
  prune?: boolean;
  embeddings?: boolean;
}

const date = (name: string) => (v: string) => {
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw new Error(`${name} must be a date (ISO 8601), got "${v}"`);
  return d;
};

export function registerBackfillCommand(program: Command): void {
  program
    .command('backfill')
    .description('tag objects already in a bucket, through the same router as live uploads (resumable, rate-limited)')
    .argument('<target>', 's3://bucket[/prefix]')
    .option('--tier <tier>', 'only objects that route to this tier')
    .option('--only-missing', 'only objects without an EffiTag marker')
    .option('--model-older-than', 'only objects tagged by another model or weights than the current ones')
    .option('--retry-failed', 'also objects whose last attempt failed with the current model')
    .option('--since <date>', 'last modified at or after (ISO 8601)', date('--since'))
    .option('--until <date>', 'last modified before (ISO 8601)', date('--until'))
    .option('--dry-run', 'count what would be enqueued (per tier and variant) and estimate the cost; send nothing')
    .option('--rate <n>', 'objects per second at most', parseNumber('--rate', 0.1, 100_000))
    .option('--concurrency <n>', 'objects decided at once', parseNumber('--concurrency', 1, 512, true), 32)
    .option('--resume', 'continue an interrupted run from its checkpoint')
    .option('--checkpoint <file>', 'checkpoint file (default: in the cache, per bucket/prefix)')
    .option('--tiers <file>', "tiers file (must be the stack's; default: the stack's own, else $EFFITAG_TIERS_FILE)")
    .option('--remote', "start the stack's Step Functions backfill instead of listing from here (a deployed stack; large buckets)")
    .option('--json', 'print the report as JSON')
    .option('--index', 'fill the tag index from tags already in object metadata: no inference, nothing enqueued, objects untouched')
    .option(
      '--embeddings',
      'add the embeddings (similar images) and perceptual hashes that objects tagged before them lack: each is downloaded, decoded and (for an embedding) run through its model again, here; tags and objects untouched. With --dry-run: count and price it',
    )
    .option(
      '--prune',
      'with --index: also unindex objects deleted while no event reached the index (a scan of the index and a HEAD per key)',
    )
    .action(async (target: string, opts: BackfillCli, command: Command) => {
      const { bucket, prefix } = parseS3Url(target);
      if (opts.prune && !opts.index) throw new Error('--prune works with --index');
      if (opts.index && opts.embeddings) throw new Error('--index and --embeddings are separate runs');
      if (opts.index) return indexBackfill(bucket, prefix, opts, command);
      if (opts.embeddings) return embeddingsBackfill(bucket, prefix, opts, command);
      if (opts.onlyMissing && opts.modelOlderThan) throw new Error('--only-missing and --model-older-than exclude each other');
      const filter: BackfillFilter = {
        mode: opts.onlyMissing ? 'missing' : opts.modelOlderThan ? 'older' : 'stale',
        retryFailed: opts.retryFailed,
        onlyTier: opts.tier,
      };

      if (opts.remote) {
        const handle = await commandStack(command);
        const arn = handle.backfillStateMachine;
        if (!arn)
          throw new Error(
            `--remote runs a deployed stack's backfill state machine; stack ${handle.name} has none (name one: --stack NAME)`,
          );
        const input = { bucket, prefix, filter, since: opts.since?.toISOString() ?? null, until: opts.until?.toISOString() ?? null };
        const sfn = new SFNClient({
          ...(handle.region ? { region: handle.region } : {}),
          ...(handle.profile ? { profile: handle.profile } : {}),
        });
        const out = await sfn.send(
          new StartExecutionCommand({ stateMachineArn: arn, input: JSON.stringify(input), name: `backfill-${Date.now()}` }),
        );
        sfn.destroy();
        process.stdout.write(
          `started ${out.executionArn}\nwatch it in the Step Functions console or the EffiTag dashboard (Backfill widgets)\n`,
        );
        return;
      }

      const conn = await openCommandStack(command);
      const { config: tiers } = stackTiers(conn.handle, opts.tiers);
      if (opts.tier && !tiers.tiers[opts.tier])
        throw new Error(`--tier ${opts.tier}: no such tier; defined: ${Object.keys(tiers.tiers).join(', ')}`);
      const { store, queues } = conn;
      for (const tier of Object.keys(tiers.tiers))
        if (!queues[tier]) throw new Error(`stack ${conn.handle.name} has no queue for tier ${tier}: is --tiers the stack's?`);
      const models = await conn.markers(tiers);
      const batcher = new TaskBatcher(queues);
      const counters = new Counters();
      // Whether an object is tagged may be in the index alone: always for a tier that writes back to
      // the index only, and for a metadata or tags tier when the object had no room for the marker
      // (pipeline/backfill-filter.ts taggingInIndex). Without the index such objects are enqueued
      // again on every backfill. A stack has one unless deployed without (-c effitag:index=false).
      const indexOnly = tiers.indexOnlyTiers.length > 0;
      const index = indexOnly ? conn.requireIndex() : conn.index;
      if (!index)
        process.stderr.write(
          `note: stack ${conn.handle.name} has no tag index: objects tagged in the index only (no room in their metadata, or 10 user tags) are enqueued again\n`,
        );
      const router = makeRouter({
        store,
        queues,
        tiers,
        models,
        index,
        counters,
        sink: (t) => batcher.add(t),
        log: jsonLogger({ level: 'warn' }),
      });

      const checkpoint = fileCheckpoint(
        opts.checkpoint ?? join(cacheDir(), 'backfill', `${bucket}${prefix ? `-${prefix.replace(/[^A-Za-z0-9._-]/g, '_')}` : ''}.json`),
      );
      const resume = opts.resume
        ? await resumePoint(checkpoint, { bucket, prefix, filter, since: opts.since, until: opts.until })
        : undefined;
      if (opts.resume && !resume) process.stderr.write('no unfinished checkpoint for this backfill: starting from the beginning\n');

      // Progress: the total comes from a second listing pass (1,000 keys per request) that runs beside
      // the backfill, so a bucket of millions starts at once; `+` marks a total still being counted.
      const bar =
        process.stderr.isTTY && !opts.json
          ? new cliProgress.SingleBar(
              {
                format: 'backfill [{bar}] {value}/{total}{counting} keys | {enqueued} enqueued | {rate} keys/s | eta {eta_formatted}',
                stream: process.stderr,
                etaBuffer: 200,
              },
              cliProgress.Presets.shades_classic,
            )
          : undefined;
      const counting = new AbortController();
      if (bar) {
        const before = resume?.report.listed ?? 0;
        bar.start(before, before, { enqueued: resume?.report.enqueued ?? 0, rate: '0', counting: '+' });
        void (async () => {
          let total = before;
          let token: string | undefined;
          do {
            const page = await store.list(bucket, { prefix, continuationToken: token, startAfter: token ? undefined : resume?.lastKey });
            total += page.objects.length;
            token = page.nextContinuationToken;
            bar.setTotal(total);
          } while (token && !counting.signal.aborted);
          bar.update({ counting: '' });
        })().catch(() => bar.update({ counting: ' (count failed)' }));
      }
      const started = performance.now();
      const abort = new AbortController();
      const onSignal = () => abort.abort();
      process.once('SIGINT', onSignal);
      const report = await runBackfill(
        {
          store,
          router,
          batcher,
          checkpoint,
          counters,
          onProgress: (r) => {
            if (bar && r.listed > bar.getTotal()) bar.setTotal(r.listed); // the count has not caught up yet
            bar?.update(r.listed, {
              enqueued: r.enqueued,
              rate: ((r.listed - (resume?.report.listed ?? 0)) / ((performance.now() - started) / 1000)).toFixed(0),
            });
          },
        },
        {
          bucket,
          prefix,
          filter,
          since: opts.since,
          until: opts.until,
          rate: opts.rate,
          dryRun: opts.dryRun,
          concurrency: opts.concurrency,
          resume,
          signal: abort.signal,
        },
      );
      process.off('SIGINT', onSignal);
      counting.abort();
      bar?.stop();
      printReport(report, opts, tiers, (performance.now() - started) / 1000);
      if (!report.complete) {
        process.stderr.write('interrupted: run again with --resume to continue\n');
        process.exitCode = 130;
      } else if (report.errors) process.exitCode = 1;
    });
}

/** A mode that takes none of `keys`: those given are named in one line (`why; it does not take --a, --b`). */
function refuseOptions(opts: BackfillCli, keys: readonly (keyof BackfillCli)[], why: string): void {
  const refused = keys.filter((k) => opts[k]);
  if (refused.length)
    throw new Error(`${why}; it does not take ${refused.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}`);
}

/** `backfill --embeddings`: vectors and hashes for objects tagged before they were kept (pipeline/embeddings-backfill.ts). */
async function embeddingsBackfill(bucket: string, prefix: string, opts: BackfillCli, command: Command): Promise<void> {
  refuseOptions(
    opts,
    ['remote', 'tier', 'onlyMissing', 'modelOlderThan', 'retryFailed', 'resume', 'rate', 'since', 'until'],
    '--embeddings adds to what is tagged',
  );
  const conn = await openCommandStack(command);
  const { config: tiers } = stackTiers(conn.handle, opts.tiers);
  const models = await stackCatalog(conn, tiers);
  const vectors = stackVectors(conn, 'write');
  if (!vectors)
    process.stderr.write(`note: stack ${conn.handle.name} keeps no embeddings (no vector bucket): adding perceptual hashes only\n`);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  const started = performance.now();
  try {
    const report = await backfillEmbeddings(
      { store: conn.store, index: conn.requireIndex(), vectors, tiers, models },
      // Inference runs here: two objects at once keep the engine busy while the next downloads and decodes.
      { bucket, prefix: prefix || undefined, dryRun: opts.dryRun, concurrency: Math.min(opts.concurrency, 2), signal: abort.signal },
    );
    const seconds = (performance.now() - started) / 1000;
    printReport(
      {
        ...emptyReport(),
        listed: report.listed,
        enqueued: report.vectors,
        byTierVariant: report.byTierVariant,
        bytesByTierVariant: report.bytesByTierVariant,
        skipped: report.skipped,
        errors: report.errors,
        errorSamples: report.errorSamples,
        complete: report.complete,
      },
      opts,
      tiers,
      seconds,
      { embeddings: report },
    );
    if (!report.complete) process.exitCode = 130;
    else if (report.errors) process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    await models.dispose();
    conn.close();
  }
}

/** `backfill --index`: the index from metadata, with a progress bar; exit 1 on errors. */
async function indexBackfill(bucket: string, prefix: string, opts: BackfillCli, command: Command): Promise<void> {
  refuseOptions(
    opts,
    ['dryRun', 'remote', 'tier', 'onlyMissing', 'modelOlderThan', 'retryFailed', 'resume', 'rate'],
    '--index reads metadata only',
  );
  const conn = await openCommandStack(command);
  const index = conn.requireIndex();
  const bar =
    process.stderr.isTTY && !opts.json
      ? new cliProgress.SingleBar(
          { format: 'index [{bar}] {value} keys | {indexed} indexed | {untagged} untagged', stream: process.stderr },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
  bar?.start(0, 0, { indexed: 0, untagged: 0 });
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  const started = performance.now();
  try {
    const report = await indexExisting(
      { store: conn.store, index },
      {
        bucket,
        prefix: prefix || undefined,
        since: opts.since,
        until: opts.until,
        concurrency: opts.concurrency,
        signal: abort.signal,
        onProgress: (r) => {
          bar?.setTotal(r.listed);
          bar?.update(r.listed, { indexed: r.indexed, untagged: r.untagged });
        },
      },
    );
    bar?.stop();
    const pruned = opts.prune
      ? await pruneIndex(
          { store: conn.store, index },
          { bucket, prefix: prefix || undefined, concurrency: opts.concurrency, signal: abort.signal },
        )
      : undefined;
    const seconds = (performance.now() - started) / 1000;
    if (opts.json) process.stdout.write(`${JSON.stringify({ ...report, ...(pruned ? { pruned } : {}), seconds }, null, 2)}\n`);
    else {
      if (pruned)
        process.stdout.write(
          `prune: ${pruned.checked} indexed key(s) checked, ${pruned.pruned} no longer in the bucket and unindexed, errors ${pruned.errors}\n`,
        );
      process.stdout.write(
        `index: listed ${report.listed}, indexed ${report.indexed}, already indexed ${report.unchanged}, untagged ${report.untagged}, newer indexed ${report.stale}, errors ${report.errors} in ${seconds.toFixed(1)} s${report.complete ? '' : ' (interrupted)'}\n`,
      );
      for (const e of [...report.errorSamples, ...(pruned?.errorSamples ?? [])]) process.stdout.write(`error: ${e}\n`);
      if (report.untagged)
        process.stdout.write(`${report.untagged} object(s) carry no current tags: a plain backfill tags them (and indexes them)\n`);
    }
    if (!report.complete) process.exitCode = 130;
    else if (report.errors || pruned?.errors) process.exitCode = 1;
  } finally {
    process.off('SIGINT', onSignal);
    bar?.stop();
    conn.close();
  }
}

function printReport(
  report: BackfillReport,
  opts: BackfillCli,
  tiers: Parameters<typeof estimateCosts>[0],
  seconds: number,
  extra: { embeddings?: EmbeddingsBackfillReport } = {},
): void {
  const bench = readBenchFile(REFERENCE_BENCH);
  // Decoding is priced at the average size of the objects this run would tag.
  const costs = estimateCosts(tiers, bench, {
    imageBytes: (tier, variant) => {
      const n = report.byTierVariant[tier]?.[variant],
        bytes = report.bytesByTierVariant?.[tier]?.[variant];
      return n && bytes !== undefined ? bytes / n : undefined;
    },
  });
  const preview = Object.entries(report.byTierVariant).flatMap(([tier, m]) =>
    Object.entries(m).map(([variant, n]) => {
      const row = costs.rows.find((r) => r.tier === tier && r.variant === variant);
      return { tier, variant, images: n, dollars: row?.allInPerMillion === undefined ? undefined : (row.allInPerMillion * n) / 1e6 };
    }),
  );
  if (opts.json) {
    process.stdout.write(
      `${JSON.stringify(extra.embeddings ? { ...extra.embeddings, dryRun: !!opts.dryRun, seconds, costPreview: opts.dryRun ? preview : undefined } : { ...report, dryRun: !!opts.dryRun, seconds, costPreview: opts.dryRun ? preview : undefined }, null, 2)}\n`,
    );
    return;
  }
  const e = extra.embeddings;
  process.stdout.write(
    e
      ? `${opts.dryRun ? 'dry run: ' : ''}listed ${report.listed}, ${opts.dryRun ? 'would add' : 'added'} ${e.vectors} embedding(s) (a decode and an inference each) and ${e.hashes} perceptual hash(es) (${e.decodeOnly} by a decode alone), errors ${report.errors} in ${seconds.toFixed(1)} s${report.complete ? '' : ' (interrupted)'}\n`
      : `${opts.dryRun ? 'dry run: ' : ''}listed ${report.listed}, ${opts.dryRun ? 'would enqueue' : 'enqueued'} ${report.enqueued}, errors ${report.errors} in ${seconds.toFixed(1)} s${report.complete ? '' : ' (interrupted)'}\n`,
  );
  if (Object.keys(report.skipped).length)
    process.stdout.write(
      `skipped: ${Object.entries(report.skipped)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}\n`,
    );
  for (const e of report.errorSamples) process.stdout.write(`error: ${e}\n`);
  if (opts.dryRun && preview.length) {
    process.stdout.write('\ncost preview (all-in $ per tier and variant, from the tier cost model):\n');
    process.stdout.write(
      table(
        preview.map((p) => [
          p.tier,
          p.variant,
          p.images,
          p.dollars === undefined ? 'n/a (no throughput figure)' : `$${p.dollars.toFixed(4)}`,
        ]),
        ['tier', 'variant', 'images', 'estimate'],
      ),
    );
    const total = preview.reduce((s, p) => s + (p.dollars ?? 0), 0);
    process.stdout.write(
      `total ≈ $${total.toFixed(4)} (Amazon Rekognition: $${((report.enqueued * costs.rekognitionPerMillion) / 1e6).toFixed(2)}); see effitag tiers cost for the assumptions\n`,
    );
  }
}
