import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { chooseVariant } from '../../tiers/choose.ts';
import {
  estimateCosts,
  idleCost,
  idleResourcesOfTemplate,
  idleResourcesOfTiers,
  indexPerMillion,
  readBenchFile,
  REFERENCE_BENCH,
} from '../../tiers/cost.ts';
import { writeBackRequestsPerMillion } from '../../tiers/prices.ts';
import { loadTiers, readTiersJson, resolveTiersPath } from '../../tiers/load.ts';
import { routeObject } from '../../tiers/route.ts';
import { tagsWithImagenet, type Tier, type TiersFile, validateTiers } from '../../tiers/schema.ts';
import { int8Base, isImagenetModel } from '../../model/spec.ts';
import { directoryCatalog } from '../../pipeline/models.ts';
import { readManifest } from '../../model/weights.ts';
import { messageOf } from '../../base/errors.ts';
import { parseNumber, table } from '../format.ts';

const WRITE_BACK_MODES = ['metadata', 'tags', 'both', 'index'] as const;
const MODE_NOTES: Record<(typeof WRITE_BACK_MODES)[number], string> = {
  metadata: 'user metadata, by copying the object onto itself',
  tags: 'object tags (at most 10 per object, shared with yours)',
  both: 'metadata and object tags',
  index: 'only the tag index: the object is never rewritten',
};

/**
 * For each tier tagging with ImageNet and a custom model, per variant: is the custom model a head on
 * that variant's weights (one pass), and on which base does it run otherwise. Models missing from the
 * catalog are left out (priced as two passes, unchecked).
 */
async function customModelPasses(config: TiersFile, dir: string): Promise<Map<string, { shared: boolean; variant: string }>> {
  const catalog = directoryCatalog(dir);
  const found = new Map<string, { shared: boolean; variant: string }>();
  for (const tier of Object.values(config.tiers)) {
    if (!tier.model || !tier.imagenet) continue;
    for (const variant of tier.variants) {
      try {
        const manifest = await readManifest(join(dir, tier.model));
        const head = await catalog.sharedHead!(tier.model, variant);
        found.set(`${tier.model}/${variant}`, { shared: !!head, variant: manifest.variant });
      } catch (err) {
        process.stderr.write(`effitag: ${tier.model} beside ${variant}: not checked (${messageOf(err)}); two passes priced\n`);
      }
    }
  }
  return found;
}

/**
 * What a tier tags with, for `tiers show`: its variants' ImageNet classifiers, an int8 model of one
 * (`lite0-int8`), or a custom model (`effitag train --name`, or its int8 model), alone or beside ImageNet.
 */
function tagsWith(tier: Tier): string {
  if (!tier.model) return 'imagenet';
  if (isImagenetModel(tier.model)) return `${tier.model} (int8)`;
  const kind = int8Base(tier.model) === undefined ? 'custom' : 'custom, int8';
  return `${tier.model} (${kind})${tagsWithImagenet(tier) ? ' + imagenet' : ''}`;
}

export function registerTiersCommands(program: Command): void {
  const tiers = program
    .command('tiers')
    .description('cost tiers: which variant, hardware and budget per bucket/prefix')
    .option('--tiers <file>', 'tiers file (default: $EFFITAG_TIERS_FILE, cdk.json context effitag:tiersFile, tiers/defaults.json)');
  const tiersFile = (cmd: Command) => (cmd.optsWithGlobals() as { tiers?: string }).tiers;

  tiers
    .command('validate')
    .description('validate a tiers file; errors name their path; exit status 1 on errors')
    .argument('[file]', 'tiers file')
    .option('--json', 'print {file, valid, issues} as JSON')
    .action((file: string | undefined, opts: { json?: boolean }, cmd: Command) => {
      const path = resolveTiersPath(file ?? tiersFile(cmd));
      const result = validateTiers(readTiersJson(path));
      if (opts.json) {
        const valid = !result.issues.some((i) => i.severity === 'error');
        process.stdout.write(`${JSON.stringify({ file: path, valid, issues: result.issues }, null, 2)}\n`);
        if (!valid) process.exitCode = 1;
        return;
      }
      for (const issue of result.issues) process.stdout.write(`${issue.severity}: ${issue.path}: ${issue.message}\n`);
      const errors = result.issues.filter((i) => i.severity === 'error').length;
      const warnings = result.issues.length - errors;
      process.stdout.write(`${path}: ${errors ? `${errors} error(s)` : 'valid'}${warnings ? `, ${warnings} warning(s)` : ''}\n`);
      if (errors) process.exitCode = 1;
    });

  tiers
    .command('show')
    .description('the effective configuration: tiers and routing')
    .option('--json', 'print the validated configuration with defaults filled in')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const { path, config } = loadTiers(tiersFile(cmd));
      if (opts.json) {
        // imagenet's default filled in too (false beside model, true without): whether each tier tags with ImageNet.
        const tiers = Object.fromEntries(Object.entries(config.input.tiers).map(([n, t]) => [n, { ...t, imagenet: tagsWithImagenet(t) }]));
        return void process.stdout.write(`${JSON.stringify({ ...config.input, tiers }, null, 2)}\n`);
      }
      process.stdout.write(`tiers file: ${path}\n\n`);
      process.stdout.write(
        table(
          Object.entries(config.tiers).map(([name, t]) => [
            name,
            t.variants.join(' '),
            tagsWith(t),
            t.compute.target === 'ecs-gpu'
              ? `${t.compute.instanceType} ${t.compute.capacity} ≤${t.compute.maxTasks}`
              : `Lambda ${t.compute.memoryMb} MB ≤${t.compute.maxConcurrency}`,
            t.engine,
            t.batchSize,
            t.topK,
            t.minConfidence,
            t.writeBack,
            t.acceptsOverrides ? 'yes' : 'no',
          ]),
          ['tier', 'variants', 'tags with', 'compute', 'engine', 'batch', 'top-k', 'min p', 'write-back', 'overrides'],
        ),
      );
      process.stdout.write('\nrouting (longest prefix wins):\n');
      process.stdout.write(
        table(
          [
            ...config.routing.rules.map((r) => [`${r.bucket ?? '*'}/${r.prefix}`, r.tier, r.allowOverrides.join(' ') || '-']),
            ['(default)', config.routing.default.tier, config.routing.default.allowOverrides.join(' ') || '-'],
          ],
          ['bucket/prefix', 'tier', 'may override to'],
        ),
      );
    });

  tiers
    .command('explain')
    .description('which tier and variant an object of this size would get, and why')
    .requiredOption('--key <key>', 'object key')
    .requiredOption('--width <px>', 'image width', parseNumber('--width', 1, 1e6, true))
    .requiredOption('--height <px>', 'image height', parseNumber('--height', 1, 1e6, true))
    .option('--bucket <bucket>', 'bucket name (for bucket-specific rules)')
    .option('--metadata <k=v...>', 'user metadata, e.g. effitag-tier=premium', (v: string, acc: string[] = []) => [...acc, v])
    .option('--json', 'machine-readable output')
    .action((opts: { key: string; width: number; height: number; bucket?: string; metadata?: string[]; json?: boolean }, cmd: Command) => {
      const { config } = loadTiers(tiersFile(cmd));
      const metadata: Record<string, string> = {};
      for (const kv of opts.metadata ?? []) {
        const i = kv.indexOf('=');
        if (i < 1) throw new Error(`--metadata takes key=value, got "${kv}"`);
        metadata[kv.slice(0, i)] = kv.slice(i + 1);
      }
      const route = routeObject(config, { bucket: opts.bucket, key: opts.key, metadata });
      const tier = config.tiers[route.tier];
      const choice = chooseVariant(tier, opts.width, opts.height, config.resolutionTolerance);
      if (opts.json)
        return void process.stdout.write(
          `${JSON.stringify({ key: opts.key, tier: route.tier, matched: route.matched, override: route.override, ...choice }, null, 2)}\n`,
        );
      process.stdout.write(`key:      ${JSON.stringify(opts.key)}\n`);
      process.stdout.write(`tier:     ${route.tier} (matched ${route.matched})\n`);
      if (route.override)
        process.stdout.write(
          `override: "${route.override.requested}" ${route.override.honoured ? 'honoured' : 'refused'}: ${route.override.reason}\n`,
        );
      process.stdout.write(`variant:  ${choice.variant} at ${choice.resolution}×${choice.resolution}\n`);
      process.stdout.write(`why:      ${choice.reason}\n`);
    });

  tiers
    .command('cost')
    .description('estimated $ per 1M images per tier and variant, next to Amazon Rekognition')
    .option('--bench <file>', 'engine benchmark JSON (default: bench/reference/engines.json; a fresh run: bench/results/engines.json)')
    .option(
      '--image-kb <kb>',
      "price decoding for images of this size (default: the benchmark's 1024×768 JPEG); a 12-megapixel photo is 3000–5000 KB",
      parseNumber('--image-kb', 1, 1_000_000),
    )
    .option('--no-index', 'price a stack deployed without the tag index (effitag:index=false)')
    .option('--template <file>', 'count the idle resources in this synthesized template (cdk.out/EffiTag.template.json)')
    .option(
      '--weights <dir>',
      'weights catalog: checks whether a custom model beside ImageNet (imagenet: true) is a head on its variant (1 pass) or needs its own (2)',
    )
    .option('--json', 'machine-readable output')
    .action(
      async (
        opts: { bench?: string; imageKb?: number; json?: boolean; index: boolean; template?: string; weights?: string },
        cmd: Command,
      ) => {
        const { config } = loadTiers(tiersFile(cmd));
        const benchPath = opts.bench ?? REFERENCE_BENCH;
        const imageBytes = opts.imageKb === undefined ? undefined : opts.imageKb * 1024;
        const custom = opts.weights ? await customModelPasses(config, opts.weights) : undefined;
        const report = estimateCosts(config, readBenchFile(benchPath), {
          imageBytes: imageBytes === undefined ? undefined : () => imageBytes,
          index: opts.index,
          ...(custom ? { customModel: (model: string, variant: string) => custom.get(`${model}/${variant}`) } : {}),
        });
        const idle = idleCost(
          opts.template
            ? idleResourcesOfTemplate(JSON.parse(readFileSync(opts.template, 'utf8')), opts.template)
            : idleResourcesOfTiers(config),
        );
        if (opts.json) return void process.stdout.write(`${JSON.stringify({ bench: benchPath, ...report, idle }, null, 2)}\n`);
        const money = (n?: number) => (n === undefined ? 'n/a' : `$${n < 10 ? n.toFixed(2) : n.toFixed(0)}`);
        process.stdout.write(
          table(
            report.rows.map((r) => [
              r.tier,
              r.models ? r.models.join(' + ') : r.variant,
              r.compute,
              r.imagesPerSecond === undefined ? 'n/a' : r.imagesPerSecond.toFixed(1),
              money(r.dollarsPerMillion),
              r.writeBack ?? '',
              money(r.requestsPerMillion),
              money(r.indexPerMillion),
              money(r.allInPerMillion),
              r.vsRekognition === undefined ? (r.note ?? '') : `${r.vsRekognition.toFixed(1)}× cheaper`,
              [r.passNote, r.throughputSource].filter(Boolean).join('; '),
            ]),
            [
              'tier',
              'variant',
              'compute',
              'images/s',
              'compute $/1M',
              'write-back',
              'requests $/1M',
              'index $/1M',
              'all-in $/1M',
              'vs Rekognition',
              'throughput from',
            ],
          ),
        );
        process.stdout.write('\nWrite-back modes, $ per 1M images beside compute (set per tier: writeBack):\n');
        process.stdout.write(
          table(
            WRITE_BACK_MODES.map((mode) => {
              const requests = writeBackRequestsPerMillion(mode);
              const index = opts.index ? indexPerMillion(mode) : 0;
              return [mode, money(requests), money(index), money(requests + index), MODE_NOTES[mode]];
            }),
            ['mode', 'S3 + SQS', 'index', 'together', 'what it writes'],
          ),
        );
        if (report.vectors.length) {
          process.stdout.write(
            `\nImage embeddings (S3 Vectors, for similar and dupes), per 1M images, ${report.vectors[0].pricesAsOf}; not in all-in:\n`,
          );
          process.stdout.write(
            table(
              report.vectors.map((v) => [
                v.tier,
                v.model,
                v.dimension,
                `${v.cost.storedGb.toFixed(2)} GB`,
                money(v.cost.storagePerMonth),
                money(v.cost.writes),
                money(v.cost.perMillionQueries),
              ]),
              ['tier', 'model', 'dimensions', 'stored', 'storage $/month', 'writes $ (once)', '$ per 1M queries'],
            ),
          );
        }
        process.stdout.write(`\nIdle, nothing uploaded: $${idle.dollarsPerMonth.toFixed(2)} per month (counted from ${idle.source}):\n`);
        process.stdout.write(
          table(
            idle.items.map((i) => [i.what, i.count, `$${i.dollarsPerMonth.toFixed(2)}`]),
            ['what stays', 'count', '$/month'],
          ),
        );
        for (const n of idle.notes) process.stdout.write(`  - ${n}\n`);
        process.stdout.write(`\nAmazon Rekognition label detection: $${report.rekognitionPerMillion} per 1M images.\nAssumptions:\n`);
        for (const a of report.assumptions) process.stdout.write(`  - ${a}\n`);
      },
    );
}
