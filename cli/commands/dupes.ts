/**
 * `effitag dupes s3://bucket[/prefix]`: groups of duplicate images from what the stack stored when it
 * tagged them (perceptual hashes in the tag index, embeddings in the vector index): pipeline/dupes.ts.
 * It reads only; it never deletes or changes anything.
 *
 * `effitag dupes calibrate --images DIR`: the near threshold of one model's weights, measured on the
 * user's photographs (pipeline/near-calibration.ts) and recorded beside the weights, where `dupes`
 * reads it by default.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { messageOf } from '../../base/errors.ts';
import { parseS3Url } from '../../base/s3-url.ts';
import { DEFAULT_LIMITS } from '../../inference/image.ts';
import { s3Calibrations } from '../../pipeline/aws/near-calibrations.ts';
import { type OpenStack, requireStackBucket, stackTiers } from '../../pipeline/aws/stack-handle.ts';
import { DEFAULT_MAX_DISTANCE, DEFAULT_MIN_SCORE, findDupes } from '../../pipeline/dupes.ts';
import { describeHashThreshold, describeThreshold } from '../../pipeline/dupes-lines.ts';
import {
  type CalibrationStore,
  CalibrationError,
  calibrateNear,
  type DistinctImage,
  directoryCalibrations,
  MIN_DISTINCT,
  type NearCalibration,
} from '../../pipeline/near-calibration.ts';
import { modelFor } from '../../tiers/schema.ts';
import { parseNumber, printable, table, thousands } from '../format.ts';
import { openCommandStack, stackVectors } from '../stack.ts';
import { stackCatalog } from './similar.ts';

interface DupesCli {
  maxDistance?: number;
  minScore?: number;
  json?: boolean;
}

interface CalibrateCli {
  images: string;
  model?: string;
  maxImages: number;
  json?: boolean;
}

/**
 * Where the stack's calibration records are: beside its weights (a folder, or their S3 location).
 * The galleries (effitag gallery, effitag local's) read the same.
 */
export function stackCalibrations(conn: Pick<OpenStack, 'handle' | 's3'>): CalibrationStore {
  const location = conn.handle.weightsLocation;
  return location.startsWith('s3://') ? s3Calibrations(conn.s3, location) : directoryCalibrations(location);
}

export function registerDupesCommand(program: Command): void {
  const dupes = program.command('dupes');
  dupes
    .description('groups of duplicate images: exact copies by perceptual hash, near ones by embedding (reads only, deletes nothing)')
    .argument('<target>', 's3://bucket[/prefix]')
    .option(
      '--max-distance <bits>',
      `exact copies: perceptual hashes at most this many bits apart (0-64; default ${DEFAULT_MAX_DISTANCE}, fewer as the collection grows, so that pairs of unrelated images linked by chance stay under one)`,
      parseNumber('--max-distance', 0, 64, true),
    )
    .option(
      '--min-score <cosine>',
      `near duplicates: embeddings at least this similar (cosine, above 0 up to 1; default: each model's calibrated threshold, ${DEFAULT_MIN_SCORE} where none was measured)`,
      parseNumber('--min-score', 0, 1),
    )
    .option(
      '--json',
      "print {groups:[{keys, kind, score, distance?}], exact, near, checked} as JSON (exact: the hash distance used; near: each space's threshold)",
    )
    .action(async (target: string, opts: DupesCli, command: Command) => {
      const { bucket, prefix } = parseS3Url(target);
      const conn = await openCommandStack(command);
      try {
        requireStackBucket(conn.handle, bucket);
        const vectors = stackVectors(conn);
        const report = await findDupes(
          { index: conn.requireIndex(), vectors, calibrations: stackCalibrations(conn) },
          { bucket, prefix },
          { maxDistance: opts.maxDistance, minScore: opts.minScore },
        );
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(report)}\n`);
          // Whoever reads the JSON may not look at `near` or `exact`: an unmeasured threshold, and a given
          // distance that expects chance pairs, are said on stderr too.
          if (report.exact.source === 'given' && report.exact.expectedChancePairs > 1)
            process.stderr.write(`effitag: ${describeHashThreshold(report.exact, report.checked.hashed)}\n`);
          for (const t of report.near) if (t.source === 'uncalibrated') process.stderr.write(`effitag: ${describeThreshold(t)}\n`);
          return;
        }
        const { objects, hashed, vectors: withVectors } = report.checked;
        const looked = `${objects} object(s) under s3://${bucket}/${prefix}: ${hashed} with a hash, ${vectors ? `${withVectors} with an embedding` : 'no vector index'}`;
        const thresholds = [describeHashThreshold(report.exact, hashed), ...report.near.map((t) => describeThreshold(t))]
          .map((l) => `${l}\n`)
          .join('');
        if (!report.groups.length) {
          process.stdout.write(`${thresholds}no duplicates (${looked})\n`);
          return;
        }
        process.stdout.write(
          table(
            report.groups.flatMap((g, i) =>
              g.keys.map((k, j) =>
                j === 0
                  ? [
                      String(i + 1),
                      g.kind,
                      g.kind === 'exact' ? `${g.distance} bits` : `cosine ${g.score.toFixed(3)}`,
                      `s3://${bucket}/${k}`,
                    ]
                  : ['', '', '', `s3://${bucket}/${k}`],
              ),
            ),
            ['group', 'kind', 'apart', 'object'],
          ),
        );
        process.stdout.write(`${thresholds}${report.groups.length} group(s); ${looked}; nothing was changed\n`);
      } finally {
        conn.close();
      }
    });

  dupes
    .command('calibrate')
    .description(
      "measure a model's near-duplicate threshold on your photographs (edited copies against distinct images) and record it for dupes",
    )
    .requiredOption(
      '--images <dir>',
      `a folder of distinct photographs (different scenes, no copies of each other; at least ${MIN_DISTINCT})`,
    )
    .option('--model <model>', "the model whose weights to calibrate (a variant or a custom model's name; default: the tiers' only model)")
    .option(
      '--max-images <n>',
      'photographs used at most, spread over the folder (each makes 10 files to embed)',
      parseNumber('--max-images', MIN_DISTINCT, 1000, true),
      60,
    )
    .option('--json', 'print the record as JSON')
    .action(async (opts: CalibrateCli, command: Command) => {
      const conn = await openCommandStack(command);
      try {
        const { config: tiers } = stackTiers(conn.handle);
        const models = [...new Set(Object.values(tiers.tiers).flatMap((t) => t.variants.map((v) => modelFor(t, v))))].sort();
        const model = opts.model ?? (models.length === 1 ? models[0] : undefined);
        if (!model) throw new CalibrationError(`the tiers tag with ${models.join(', ')}: name one with --model`);
        const tier = Object.values(tiers.tiers).find((t) => t.variants.some((v) => modelFor(t, v) === model));
        if (!tier) throw new CalibrationError(`no tier tags with ${model} (the tiers' models: ${models.join(', ')})`);
        const images = await readImages(opts.images, opts.maxImages, tier.limits?.maxBytes ?? DEFAULT_LIMITS.maxBytes);
        const catalog = await stackCatalog(conn, tiers);
        try {
          const space = catalog.marker(model);
          const loaded = await catalog.load(model);
          const { record, skipped } = await calibrateNear(loaded, space, images.images, {
            limits: tier.limits,
            batchSize: tier.batchSize,
            copyDistance: DEFAULT_MAX_DISTANCE,
            log: opts.json ? undefined : (line) => process.stderr.write(`${line}\n`),
          });
          for (const s of [...images.skipped, ...skipped]) process.stderr.write(`skipped ${printable(s.name)}: ${s.reason}\n`);
          const where = await stackCalibrations(conn).write(record);
          process.stdout.write(opts.json ? `${JSON.stringify(record)}\n` : calibrationText(record, where));
        } finally {
          await catalog.dispose();
        }
      } finally {
        conn.close();
      }
    });
}

/** The folder's regular files, sorted, at most `max` spread evenly over it; too-large ones skipped. */
async function readImages(dir: string, max: number, maxBytes: number) {
  let names: string[];
  try {
    names = (await readdir(dir, { withFileTypes: true }))
      .filter((e) => e.isFile())
      .map((e) => e.name)
      .sort();
  } catch (err) {
    throw new CalibrationError(`cannot read --images ${dir}: ${messageOf(err)}`);
  }
  const picked = names.length <= max ? names : Array.from({ length: max }, (_, i) => names[Math.floor((i * names.length) / max)]);
  const images: DistinctImage[] = [];
  const skipped: { name: string; reason: string }[] = [];
  for (const name of picked) {
    const file = join(dir, name);
    const { size } = await stat(file);
    if (size > maxBytes) skipped.push({ name, reason: `${thousands(size)} bytes, over the tier's ${thousands(maxBytes)}` });
    else images.push({ name, bytes: await readFile(file) });
  }
  return { images, skipped };
}

function calibrationText(r: NearCalibration, where: string): string {
  const s = r.scores;
  const sample = `${r.sample.distinct} distinct images (${thousands(r.sample.images)} files, ${thousands(s.copyPairs)} copy pairs, ${thousands(s.distinctPairs)} distinct pairs)`;
  if (!r.separable)
    return [
      `${r.space} on ${sample}: ${r.reason} (rank AUC ${s.auc.toFixed(3)}; 0.5 is chance)`,
      `no threshold chosen; recorded in ${where}: effitag dupes looks for no near groups in ${r.space} (exact groups by hash are unaffected; --min-score S forces a threshold)`,
      '',
    ].join('\n');
  const byKind = Object.entries(r.recallByKind ?? {})
    .map(([k, v]) => `${k} ${v.toFixed(2)}`)
    .join(', ');
  return [
    `${r.space} on ${sample}:`,
    `  near threshold ${r.minScore}: precision ${s.precision.toFixed(3)}, recall ${s.recall.toFixed(3)} of copy pairs on this sample (rank AUC ${s.auc.toFixed(3)})`,
    `  most alike distinct images ${s.highestDistinct.toFixed(4)}; least alike copies above them ${s.lowestCopyAbove?.toFixed(4)}`,
    `  copies at or above it with their original, by edit: ${byKind}`,
    `recorded in ${where}: effitag dupes uses ${r.minScore} for ${r.space} by default`,
    '',
  ].join('\n');
}
